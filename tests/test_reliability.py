"""Kill and resume, untrusted and damaged files, malformed input, numerical faults, full disks."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goalscope.outputs import atomic_write_bytes
from goalscope.cli import main
from goalscope.program.config import experiment_from_dict
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.rl.ppo import PPOConfig, train_new

from test_experiment import TINY

# ------------------------------------------------------------------------------------------------------------------
# Resumable training inside a job


def test_training_killed_mid_job_resumes_bit_identically(tiny_cfg, tmp_path, monkeypatch):
    reward = parse_reward("collect:0", 2)
    ppo = PPOConfig(total_steps=8 * 512, n_envs=16, n_steps=32, save_every=1024, eval_every=1024, eval_episodes=8)
    reference = train_new("cnn", {}, tiny_cfg, reward, ppo, seed=3)

    from goalscope.envs.maze import MazeVecEnv

    real_step = MazeVecEnv.step
    calls = {"n": 0}

    def dying_step(self, actions):
        calls["n"] += self.n_envs == 16  # count the training env's steps, not evaluation's (8 envs)
        if calls["n"] == 32 * 5 + 7:  # in the middle of the 6th rollout, after snapshots at 1024, 2048
            raise KeyboardInterrupt("killed")
        return real_step(self, actions)

    monkeypatch.setattr(MazeVecEnv, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_new("cnn", {}, tiny_cfg, reward, ppo, seed=3, resume_dir=tmp_path)
    assert json.loads((tmp_path / "snapshot.json").read_text())["step"] == 2048
    monkeypatch.setattr(MazeVecEnv, "step", real_step)
    resumed = train_new("cnn", {}, tiny_cfg, reward, ppo, seed=3, resume_dir=tmp_path)
    for k, v in reference.state_dict.items():
        assert torch.equal(resumed.state_dict[k], v), k
    assert resumed.extra["final_eval"] == reference.extra["final_eval"]
    # A snapshot of another configuration is never continued from.
    other = train_new("cnn", {}, tiny_cfg, reward, ppo, seed=4, resume_dir=tmp_path)
    assert not all(torch.equal(other.state_dict[k], v) for k, v in reference.state_dict.items())


def test_half_written_snapshot_is_ignored(tiny_cfg, tmp_path):
    reward = parse_reward("collect:0", 2)
    ppo = PPOConfig(total_steps=4 * 512, n_envs=16, n_steps=32, save_every=512, eval_episodes=16)
    train_new("mlp", {}, tiny_cfg, reward, ppo, seed=0, resume_dir=tmp_path)
    blob = (tmp_path / "snapshot.safetensors").read_bytes()
    (tmp_path / "snapshot.safetensors").write_bytes(blob[: len(blob) // 2])
    fresh = train_new("mlp", {}, tiny_cfg, reward, ppo, seed=0)
    again = train_new("mlp", {}, tiny_cfg, reward, ppo, seed=0, resume_dir=tmp_path)
    assert all(torch.equal(again.state_dict[k], v) for k, v in fresh.state_dict.items())


# ------------------------------------------------------------------------------------------------------------------
# Real SIGKILLs of `goalscope run`, resumed, compared byte for byte with an uninterrupted run


# One random direction per negation keeps the run short enough to be killed and resumed many times.
KILL_CFG = {**TINY, "workers": 1, "ppo": {"n_envs": 16, "n_steps": 32, "save_every": 512},
            "negate": {**TINY["negate"], "random_directions": 1}}


def _write_cfg(path: Path) -> Path:
    lines = [f'name = "{KILL_CFG["name"]}"', f"seeds = {KILL_CFG['seeds']}", "workers = 1"]
    for section in ("env", "ppo", "base", "finetune", "negate", "evaluation"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in KILL_CFG[section].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(*args, **kw):
    env = {**os.environ, "GOALSCOPE_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "goalscope.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _fingerprint(run: Path) -> dict:
    out = {"records.csv": (run / "records.csv").read_bytes()}
    for p in sorted((run / "stages").glob("*/model.safetensors")):
        out[p.parent.name] = p.read_bytes()
    for p in sorted((run / "stages").glob("*/profile*.json")):
        out[f"{p.parent.name}/{p.name}"] = p.read_bytes()
    for p in sorted((run / "heatmaps").glob("*.safetensors")):
        out[p.name] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("kill")
    cfg = _write_cfg(base / "exp.toml")
    proc = _cli("run", cfg, "--out", base / "reference")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
    return cfg, _fingerprint(base / "reference"), base


def _kill_trials(reference_run, n_trials: int, seed: int):
    cfg, reference, base = reference_run
    rng = random.Random(seed)
    for trial in range(n_trials):
        run = base / f"trial{seed}-{trial}"
        # Kill at random moments: repeatedly, with growing delays, until a run finishes on its own.
        for attempt in range(12):
            proc = _cli("run", cfg, "--out", run)
            delay = rng.uniform(0.5, 3.0 + 2 * attempt)
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                continue
            assert code == 0, proc.stderr.read().decode()
            break
        else:  # killed every time (a slow or busy machine): let it finish; what matters is resuming after kills
            proc = _cli("run", cfg, "--out", run)
            assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()
        got = _fingerprint(run)
        assert got.keys() == reference.keys()
        changed = [k for k in reference if got[k] != reference[k]]
        assert changed == [], f"trial {trial}: {changed} differ after kill and resume"


def test_sigkilled_runs_resume_to_identical_results(reference_run):
    _kill_trials(reference_run, n_trials=1, seed=0)  # 20 more with -m slow


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from the parent pids in /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out.update(kids)
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has finished; it only waits to be reaped


def test_workers_die_with_a_killed_run(reference_run):
    cfg, reference, base = reference_run
    run = base / "orphans"
    proc = _cli("run", cfg, "--out", run, "--workers", "2")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(list((run / "stages").glob(".partial-*"))) < 2:
        time.sleep(0.1)  # until two workers are inside their jobs
    everyone = _descendants(proc.pid)
    assert sum("spawn_main" in _cmdline(p) for p in everyone) >= 2, "the pool never started two workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = _cli("run", cfg, "--out", run, "--workers", "2")
    try:
        deadline = time.monotonic() + 5  # the watchdog polls every 0.2 s
        while time.monotonic() < deadline and any(_running(p) for p in everyone):
            time.sleep(0.1)
        alive = [p for p in everyone if _running(p)]
        assert alive == [], f"processes of the killed run still alive: {alive}"
        assert rerun.wait(timeout=600) == 0, rerun.stderr.read().decode()
    finally:
        rerun.kill()
    got = _fingerprint(run)
    assert got.keys() == reference.keys() and [k for k in reference if got[k] != reference[k]] == []


@pytest.mark.slow
def test_sigkilled_runs_resume_to_identical_results_many(reference_run):
    _kill_trials(reference_run, n_trials=20, seed=1)


# ------------------------------------------------------------------------------------------------------------------
# Malformed configs and arguments (property-based)

_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3))
_keys = st.sampled_from(["seeds", "workers", "name", "env", "agent", "ppo", "base", "finetune", "controls",
                         "negate", "superpose", "evaluation", "bogus"])
_sub_keys = st.sampled_from(["size", "n_types", "steps", "reward", "rewards", "alphas", "methods", "lr", "arch",
                             "config", "episodes", "layout", "retrain_steps", "n_envs", "family", "typo"])


@st.composite
def malformed_configs(draw):
    cfg = json.loads(json.dumps({k: v for k, v in TINY.items()}))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(_keys)
        if key in cfg and isinstance(cfg[key], dict) and draw(st.booleans()):
            cfg[key][draw(_sub_keys)] = draw(_values)
        else:
            cfg[key] = draw(_values)
    return cfg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_configs())
def test_malformed_configs_fail_with_a_config_error(cfg):
    try:
        experiment_from_dict(cfg)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg
    # A config that happens to be valid is fine; any other exception type fails the test.


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_reward_string_parses_or_names_the_problem(spec):
    try:
        r = parse_reward(spec, 4)
    except ConfigError as e:
        assert "\n" not in str(e)
    else:
        assert len(r.weights) == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["--steps", "--size", "--n-types", "--lr", "--reward", "--arch", "--n-envs",
                                 "-1", "0", "abc", "8", "1e9", "collect:9", "{}", "--max-steps", "--layout", "x"]),
                max_size=6))
def test_malformed_cli_arguments_exit_2_with_one_line(tmp_path_factory, capsys, argv):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    # --steps 1 keeps any accidentally valid command fast; --out names an existing run, so nothing may train.
    try:
        code = main(["train", "--out", str(out), *argv, "--reward", "collect:0"])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert (out / "keep.txt").read_text() == "precious" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------------------------------------------------------
# Damaged files and full disks


def test_tampered_safetensors_header_is_refused(tmp_path):
    from goalscope.agents.registry import build_agent
    from goalscope.agents.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
    from goalscope.envs.maze import MazeConfig

    env = MazeConfig(size=7)
    model = build_agent("mlp", env.obs_shape, 4)
    save_checkpoint(Checkpoint("mlp", {}, env, parse_reward("collect:0", 4), model.state_dict()), tmp_path / "c")
    p = tmp_path / "c" / "model.safetensors"
    blob = bytearray(p.read_bytes())
    header_len = int.from_bytes(blob[:8], "little")
    header = blob[8:8 + header_len].decode()
    tampered = header.replace('"F32"', '"F16"', 1)
    p.write_bytes(bytes(blob[:8]) + tampered.encode() + bytes(blob[8 + header_len:]))
    with pytest.raises(GoalscopeError):
        load_checkpoint(tmp_path / "c")


def test_full_disk_leaves_the_previous_file_readable(tmp_path, monkeypatch):
    target = tmp_path / "records.csv"
    atomic_write_bytes(target, b"old results\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new results that do not fit\n")
    assert target.read_bytes() == b"old results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["records.csv"]  # no temporary file left behind


@pytest.mark.parametrize("meta", ["[]", "[" * 100_000 + "]" * 100_000, '"snapshot"'])
def test_a_damaged_snapshot_is_started_over_not_a_traceback(tmp_path, meta):
    """Issue 37: a snapshot's JSON is a run file like any other, read bounded; one of the wrong shape starts the job
    over instead of raising AttributeError or RecursionError mid-run."""
    from goalscope.rl.snapshots import SNAPSHOT_META, SNAPSHOT_TENSORS, _load_snapshot

    (tmp_path / SNAPSHOT_META).write_text(meta)
    (tmp_path / SNAPSHOT_TENSORS).write_bytes(b"\0" * 16)
    assert _load_snapshot(tmp_path, {"job": 1}) is None
