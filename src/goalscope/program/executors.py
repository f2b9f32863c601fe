"""Executors run independent jobs; the runner decides what is independent (one dependency wave at a time).

An executor is anything with ``run(fn, items, desc) -> list`` that calls the picklable ``fn(item)`` for every item
and returns the results in order. The embedded default is a pool of local processes, one torch thread each:
small networks gain nothing from a second thread and lose badly when cores are shared, so parallelism comes from
running jobs side by side. Register another executor (a cluster, a queue) in ``EXECUTORS``.

``RayExecutor`` (``--executor ray``) runs each job as a Ray task with one CPU, on a local Ray instance or on a
cluster (``--address auto`` or ``ray://HOST:10001``). Ray is optional: ``pip install 'goalscope[ray]'``. Jobs read
their parents' checkpoints from the run directory, so on a multi-node cluster it must be on a filesystem that
every node sees.

May import: goalscope.errors.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Protocol

from goalscope.errors import ConfigError, GoalscopeError


class Executor(Protocol):
    """Anything that runs ``fn`` over ``items`` and returns the results in order (local pool, Ray)."""
    def run(self, fn: Callable, items: list, desc: str = "") -> list: ...


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="job", leave=True, disable=total == 0 or os.environ.get("GOALSCOPE_QUIET") == "1")


def _init_worker(parent: int | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    if parent is not None:
        _die_with_parent(parent)


def _die_with_parent(parent: int, poll_s: float = 0.2) -> None:
    """End this worker as soon as the process that started it is gone (e.g. ``kill -9`` of ``goalscope run``).

    A pool worker outlives a killed parent by default and would go on training and writing into the run directory
    while the user's rerun holds it. A daemon thread watching the parent pid works on every POSIX system (the
    orphan is re-parented, so ``getppid`` changes), unlike Linux's parent-death signal, which follows the *thread*
    that started the worker. ``parent`` is passed in rather than read here: the parent may already be gone by the
    time a spawned worker has imported torch."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(70)

    threading.Thread(target=watch, name="goalscope-parent-watch", daemon=True).start()


class LocalExecutor:
    """A process pool sized to the machine (``workers=0``), or in-process when ``workers == 1``."""

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1

    def run(self, fn: Callable, items: list, desc: str = "") -> list:
        results: list = [None] * len(items)
        with _progress(len(items), desc) as bar:
            if self.workers == 1 or len(items) <= 1:
                for i, item in enumerate(items):
                    results[i] = fn(item)
                    bar.update()
                return results
            # spawn, not fork: a forked copy of a process that already ran torch can deadlock in its thread pools.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(self.workers, len(items)), mp_context=ctx, initializer=_init_worker,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
        return results


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise GoalscopeError(f"the ray executor needs Ray, which is not installed ({e}); install goalscope[ray]: "
                             "pip install 'goalscope[ray]'") from None
    return ray


def _ray_task(fn: Callable, item):
    """What runs in a Ray worker: one torch thread, as in the local pool, then the job."""
    import torch

    torch.set_num_threads(1)
    return fn(item)


class RayExecutor:
    """Each item is a Ray task with ``num_cpus=1``; results come back in order, progress as tasks finish.

    ``address=None`` starts a local Ray instance with ``workers`` CPUs (0: all of them), unless this process is
    already connected to Ray (then that cluster is used as it is); ``"auto"`` joins the cluster this node belongs
    to; ``"ray://HOST:10001"`` connects through Ray Client. Ray is started on the first ``run``, not here.
    ``workers > 0`` also caps the tasks in flight, so at most ``workers`` jobs run at once on any cluster.
    """

    def __init__(self, address: str | None = None, workers: int = 0):
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        _import_ray()  # fail now, with the install hint, rather than after the run directory is set up
        self.address = address
        self.workers = workers
        self._remote = None

    def _connect(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs = dict(address=self.address, ignore_reinit_error=True, log_to_driver=False)
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                # Starting a fresh local instance: these only apply there (Ray refuses them when joining a cluster).
                kwargs.update(num_cpus=self.workers or None, include_dashboard=False)
            try:
                ray.init(**kwargs)
            except Exception as e:  # Ray raises bare Exception for some start failures
                where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
                raise GoalscopeError(f"could not start or reach {where}: {e}") from None
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1)(_ray_task)
        return ray

    def run(self, fn: Callable, items: list, desc: str = "") -> list:
        results: list = [None] * len(items)
        if not items:
            return results
        ray = self._connect()
        fn_ref = ray.put(fn)
        limit = self.workers or len(items)
        todo = iter(enumerate(items))
        pending: dict = {}

        def top_up() -> None:
            while len(pending) < limit:
                nxt = next(todo, None)
                if nxt is None:
                    return
                pending[self._remote.remote(fn_ref, nxt[1])] = nxt[0]

        with _progress(len(items), desc) as bar:
            try:
                top_up()
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        results[pending.pop(ref)] = ray.get(ref)
                        bar.update()
                    top_up()
            except BaseException:
                for ref in pending:  # an error or Ctrl-C: stop what is still queued or running
                    ray.cancel(ref, force=True)
                raise
        return results


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, **options) -> Executor:
    """Build executor ``name``. Options left at None are dropped where the executor does not take them (so callers
    may pass ``address=None`` to any executor); one that is set but not taken is an error naming its flag."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r} (known: {', '.join(sorted(EXECUTORS))})")
    factory = EXECUTORS[name]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass everything on
        return factory(**options)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in [k for k in options if k not in params]:
            if options[key] is not None:
                flag = "--" + key.replace("_", "-")
                takers = [n for n, f in sorted(EXECUTORS.items()) if _takes(f, key)]
                hint = f" (only {', '.join(takers)} {'does' if len(takers) == 1 else 'do'})" if takers else ""
                raise ConfigError(f"{flag} does not apply to the {name!r} executor{hint}")
            del options[key]
    return factory(**options)


def _takes(factory: Callable, key: str) -> bool:
    try:
        return key in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
