"""Batches of Gymnasium envs stepped together, in this process or spread over worker processes.

Both backends step ``n`` envs made by one factory with Gymnasium's same-step autoreset and hand back only what
goalscope's event envs read: observations, terminations, truncations, each env's events of the step, and the final
observations of the episodes that just ended. Seeds follow Gymnasium's rule (env ``i`` of a batch reset with
``seed`` gets ``seed + i``), so a batch split over processes produces the same episodes as one in-process batch.

Why not Gymnasium's ``AsyncVectorEnv``: it runs one process per env and exchanges a message with each of them
every step. On 2 cores, 16 Crafter envs stepped at 660 steps/s that way against 710 in one process, because the
per-env round trips and the stalls of one env's slow reset eat the second core. :class:`ProcessBatch` gives each
worker a contiguous share of the envs (a ``SyncVectorEnv`` of its own), so a step costs one round trip per worker
and a slow reset is averaged over the worker's share (benchmarks/README.md, "Crafter").

Workers die with the process that started them, even one killed with SIGKILL: a forked worker closes every
pipe end it inherited but its own (so the parent's death is an end-of-file it sees), on Linux asks for SIGKILL
when its parent dies (``PR_SET_PDEATHSIG``), and everywhere polls its pipe with a timeout and leaves once its
parent pid has changed. There are never more workers than CPUs (nor than ``MAX_ENV_PROCESSES``, however many a
config asks for): more would only take turns on the same cores.

May import: goalscope.errors.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import weakref
from typing import Callable

import gymnasium as gym
import numpy as np

from goalscope.errors import ConfigError


def events_of(info: dict, n: int, k: int) -> np.ndarray:
    """The ``(n, k)`` event counts in a vector env's ``info`` (zeros where an env reported none)."""
    if "events" not in info:
        return np.zeros((n, k), dtype=np.int64)
    ev = np.asarray(info["events"])
    if ev.dtype == object:  # entries missing for some envs come back as None
        ev = np.stack([np.zeros(k) if e is None else np.asarray(e) for e in ev])
    if ev.shape != (n, k):
        raise ConfigError(f"the env reports events of shape {ev.shape[1:]} but the config says n_types = {k}")
    return ev.astype(np.int64)


class LocalBatch:
    """``n`` envs from ``make`` in this process (Gymnasium's ``SyncVectorEnv``), with ``k`` event types."""

    def __init__(self, make: Callable[[], gym.Env], n: int, k: int):
        self.n, self.k = n, k
        self.venv = gym.vector.SyncVectorEnv([make for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    def reset(self, seed: int | None) -> np.ndarray:
        return self.venv.reset(seed=seed)[0]

    def step(self, actions: np.ndarray):
        """``(obs, terminated, truncated, events[n, k], final_obs[done])`` for one step of every env."""
        obs, _, term, trunc, info = self.venv.step(actions)
        done = term | trunc
        events = events_of(info, self.n, self.k)
        final_obs = None
        if done.any():  # the ended episodes' last events are in final_info (their info is the reset's)
            events[done] = events_of(info.get("final_info", {}), self.n, self.k)[done]
            final_obs = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
        return obs, term, trunc, events, final_obs

    def close(self) -> None:
        self.venv.close()


MAX_ENV_PROCESSES = 256  # env.processes: a config may ask for no more (and gets at most one worker per CPU)
PARENT_POLL_S = 0.2  # how often an idle worker checks that its parent is still there


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, as in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _die_with(parent: int, inherited: list, main_thread: bool) -> None:
    """Tie this worker's life to ``parent``'s (see the module docstring).

    ``inherited``: the pipe ends a forked worker holds only because fork copied them (the parent's end of its own
    pipe, the other workers' ends); while the worker holds its parent's end, the parent's death closes nothing it
    would notice. Linux's parent-death signal follows the *thread* that forked, so it is asked for only when that
    was the main thread (a batch made in a short-lived thread would otherwise lose its workers with the thread)."""
    for conn in inherited:
        try:
            conn.close()
        except OSError:
            pass
    if main_thread and sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass  # the pipe and the pid check below still end the worker
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(70)


def _worker(conn, make, n: int, k: int, parent: int | None = None, inherited: list = (),
            main_thread: bool = False) -> None:
    if parent is not None:
        _die_with(parent, inherited, main_thread)
    try:
        batch = LocalBatch(make, n, k)
    except Exception as e:  # noqa: BLE001 (the parent's first request reads it and raises it with the worker named)
        conn.send((False, f"cannot make its envs: {type(e).__name__}: {e}"))
        conn.close()
        return
    try:
        while True:
            while not conn.poll(PARENT_POLL_S):
                if parent is not None and os.getppid() != parent:
                    return  # re-parented: whoever started this worker is gone
            command, arg = conn.recv()
            if command == "close":
                break
            try:
                conn.send((True, batch.reset(arg) if command == "reset" else batch.step(arg)))
            except Exception as e:  # noqa: BLE001 (handed to the parent, which raises it with the worker named)
                conn.send((False, f"{type(e).__name__}: {e}"))
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the parent went away (a send to a closed pipe is an OSError)
    finally:
        batch.close()
        conn.close()


def _context():
    """``fork`` on Linux (what Gymnasium's ``AsyncVectorEnv`` uses there): workers start in milliseconds, and neither a
    notebook nor a script without a ``__main__`` guard is re-imported. The workers never touch torch, so the threads
    of the training process are no hazard to them. Elsewhere ``spawn`` (macOS cannot fork safely)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


_WARMED: set[str] = set()


def _warm(make: Callable[[], gym.Env]) -> None:
    """Make and reset one env in this process, once per factory, so that what an env loads or compiles on first use
    (Crafter: numba's compiled world generation, its textures) is inherited by every forked worker instead of being
    redone in each: a Crafter worker then starts in 0.45 s instead of 1.2 s, which every evaluation pays."""
    key = repr(make)
    if key not in _WARMED:
        env = make()
        try:
            env.reset(seed=0)
        finally:
            env.close()
        _WARMED.add(key)


class ProcessBatch:
    """``n`` envs from ``make`` spread over ``processes`` worker processes (at most one per CPU and
    ``MAX_ENV_PROCESSES``), each stepping a contiguous share.

    Workers are forked on Linux (:func:`_context`); elsewhere they are spawned, so ``make`` must be picklable (a
    config's bound method is)."""

    def __init__(self, make: Callable[[], gym.Env], n: int, k: int, processes: int):
        workers = max(1, min(processes, n, cpu_count(), MAX_ENV_PROCESSES))
        sizes = [len(s) for s in np.array_split(np.arange(n), workers)]
        self.offsets = np.cumsum([0, *sizes])
        ctx = _context()
        fork = ctx.get_start_method() == "fork"
        if fork:
            _warm(make)
        main_thread = threading.current_thread() is threading.main_thread()
        self.conns, self.procs = [], []
        # Closed by close(), or when the batch is garbage-collected: an env dropped without close() leaks no workers.
        self._finalizer = weakref.finalize(self, _shutdown, self.conns, self.procs)
        try:
            for size in sizes:
                parent, child = ctx.Pipe()
                # A spawned worker inherits no pipe ends; handing it ours would pickle (duplicate) them.
                inherited = [parent, *self.conns] if fork else []
                proc = ctx.Process(target=_worker, args=(child, make, size, k, os.getpid(), inherited, main_thread),
                                   daemon=True)
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def _ask(self, command: str, args) -> list:
        for conn, arg in zip(self.conns, args):
            try:
                conn.send((command, arg))
            except OSError:  # the worker has ended, and may have said why before it did: read below
                pass
        out = []
        for i, conn in enumerate(self.conns):
            try:
                ok, value = conn.recv()
            except (EOFError, OSError):
                self.procs[i].join(timeout=1)
                raise ConfigError(f"env worker process {i} died (exit code {self.procs[i].exitcode})") from None
            if not ok:
                raise ConfigError(f"env worker process {i}: {value}")
            out.append(value)
        return out

    def reset(self, seed: int | None) -> np.ndarray:
        seeds = [None if seed is None else seed + int(o) for o in self.offsets[:-1]]
        return np.concatenate(self._ask("reset", seeds))

    def step(self, actions: np.ndarray):
        parts = self._ask("step", np.split(np.asarray(actions), self.offsets[1:-1]))
        obs, term, trunc, events = (np.concatenate([p[j] for p in parts]) for j in range(4))
        finals = [p[4] for p in parts if p[4] is not None]
        return obs, term, trunc, events, np.concatenate(finals) if finals else None

    def close(self) -> None:
        self._finalizer()


def _shutdown(conns: list, procs: list) -> None:
    """Ask every worker to stop, wait a little, then end the ones still running (in place: the lists empty)."""
    for conn in conns:
        try:
            conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
    for conn in conns:
        conn.close()
    conns.clear()
    procs.clear()
