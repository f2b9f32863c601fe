"""Env worker processes die with whatever started them, even when it is killed with SIGKILL (issue 37, finding 1).

Each trial starts a small Python process that steps envs in worker processes, kills it with SIGKILL and looks in
/proc for any process of its tree still running a few seconds later. Whatever a failing trial leaves is killed by
pid at the end, so a regression fails the test without leaving orphans on the machine."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from goalscope.envs.batches import MAX_ENV_PROCESSES, ProcessBatch
from goalscope.envs.events import GymEventsConfig
from goalscope.errors import ConfigError

MAZE = {"family": "gym_events", "id": "goalscope/ObjectMaze-v0", "n_types": 3, "max_steps": 16,
        "event_types": ["a", "b", "c"], "kwargs": {"size": 5, "n_types": 3, "max_steps": 16}}

# The helper each trial runs: `direct` makes the batch itself (a training process); `pool` makes it inside a job
# of goalscope's process pool (a run with --workers), so the tree is run -> pool worker -> env workers.
HELPER = textwrap.dedent(f"""
    import sys, threading, time
    from goalscope.envs.batches import ProcessBatch
    from goalscope.envs.events import GymEventsConfig

    def job(i):
        batch = ProcessBatch(GymEventsConfig.from_json({MAZE!r}).make_single, 4, 3, processes=2)
        batch.reset(i)
        print("ready", flush=True)
        time.sleep(600)

    if __name__ == "__main__":
        mode = sys.argv[1]
        if mode == "direct":
            job(0)
        elif mode == "thread":  # made outside the main thread: no parent-death signal, the pipe and poll remain
            threading.Thread(target=job, args=(0,)).start()
        else:
            from goalscope.program.executors import LocalExecutor
            LocalExecutor(2).run(job, [0, 1])
""")


def _tree(pid: int) -> set[int]:
    """``pid`` and every process below it, from the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = {pid}, [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out.update(kids)
        todo += kids
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _kill_trial(tmp_path: Path, mode: str, ready: int) -> list[int]:
    """Start the helper, wait until ``ready`` batches have stepped, SIGKILL it, and return what is still running
    5 s later (after killing it: the test never leaves a process behind)."""
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=tmp_path)
    everyone: set[int] = {proc.pid}
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < ready and time.monotonic() < deadline:
            if proc.stdout.readline().strip() == b"ready":
                seen += 1
        assert seen == ready, "the helper never started its env workers"
        everyone = _tree(proc.pid)
        assert len(everyone) >= 3, everyone  # the helper and at least two env workers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in everyone):
            time.sleep(0.05)
        return sorted(p for p in everyone if _running(p))
    finally:
        for pid in everyone:
            if _running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("mode, ready", [("direct", 1), ("thread", 1), ("pool", 2)])
def test_env_workers_die_with_a_sigkilled_parent(tmp_path, mode, ready):
    assert _kill_trial(tmp_path, mode, ready) == []


@pytest.mark.slow
def test_env_workers_die_with_a_sigkilled_parent_ten_times(tmp_path):
    left = [_kill_trial(tmp_path, mode, ready) for mode, ready in [("direct", 1), ("pool", 2)] * 5]
    assert left == [[]] * 10


def test_env_processes_are_bounded():
    with pytest.raises(ConfigError, match=f"env.processes must be at most {MAX_ENV_PROCESSES}"):
        GymEventsConfig.from_json({**MAZE, "processes": 10**15})
    batch = ProcessBatch(GymEventsConfig.from_json(MAZE).make_single, 64, 3, processes=MAX_ENV_PROCESSES)
    try:
        assert len(batch.procs) <= (os.cpu_count() or 1)  # never more workers than CPUs, whatever was asked
        assert batch.reset(0).shape[0] == 64
    finally:
        batch.close()
