"""Executors run independent jobs; the runner decides what is independent (one dependency wave at a time).

An executor is anything with ``run(fn, items, desc) -> list`` that calls the picklable ``fn(item)`` for every item
and returns the results in order. The embedded default is a pool of local processes, one torch thread each:
small networks gain nothing from a second thread and lose badly when cores are shared, so parallelism comes from
running jobs side by side. Register another executor (a cluster, a queue) in ``EXECUTORS``.

``RayExecutor`` (``--executor ray``) runs each job as a Ray task with one CPU, on a private local Ray instance
(no ``--address``: started for this run and stopped with it, beside any cluster the machine runs, which it never
joins) or on a cluster (``--address auto``, ``HOST:PORT`` or ``ray://HOST:10001``). Ray is optional:
``pip install 'goalscope[ray]'``. Jobs read their parents' checkpoints from the run directory, so on a multi-node
cluster it must be on a filesystem that every node sees.

May import: goalscope.errors.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import socket
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

    # Items start in the order given (the pool hands them out first come, first served), so an item may wait for
    # one given before it: the runner then submits every stage at once and a job waits only for what it reads.
    in_order = True

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


# How long the reachability check of a cluster address may wait for a TCP connection. A dead address (a cluster
# that crashed or was killed without `ray stop`) is refused at once on the same machine; an unroutable host takes the
# full timeout. Without this check Ray itself retries a dead GCS address for minutes, printing only warnings.
RAY_PROBE_TIMEOUT_S = 10.0


def _ray_address_file() -> str:
    """Where ``ray start`` records the cluster that ``ray.init("auto")`` joins: ``$RAY_TMPDIR/ray/ray_current_cluster``
    (``/tmp/ray/...`` by default). Ray's own helper where it has one, else the same rule."""
    try:
        from ray._common.utils import get_ray_address_file
        return get_ray_address_file(None)
    except Exception:  # another Ray version: Ray's documented default
        root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        return os.path.join(root, "ray", "ray_current_cluster")


def _resolve_ray_address(address: str) -> tuple[str | None, str | None]:
    """The address that ``ray.init(address)`` will dial (``None`` where Ray will find a cluster some other way: a
    running GCS process found by ``auto``) and, for ``auto``, where it came from: ``"RAY_ADDRESS"`` or the path of
    the ``ray_current_cluster`` file."""
    if address != "auto":
        return address, None
    env = os.environ.get("RAY_ADDRESS", "")
    if env and env != "auto":
        return env, "RAY_ADDRESS"
    path = _ray_address_file()
    try:
        with open(path) as f:
            found = f.read().strip()
    except OSError:
        return None, None
    return (found or None), path


def _probe(target: str, timeout_s: float) -> str | None:
    """``None`` if a TCP connection to ``target`` (``HOST:PORT`` or ``ray://HOST:PORT``) opens within ``timeout_s``,
    else why not. An address that is not ``HOST:PORT`` is left to Ray."""
    hostport = target.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        return str(e) or type(e).__name__
    return None


def _unreachable(target: str, source: str | None, why: str) -> GoalscopeError:
    """The one-line error for a cluster address that did not answer, naming where the address came from."""
    hint = "is the cluster up (`ray status`)? Pass --address of a live cluster"
    if source == "RAY_ADDRESS":
        target += ", the address in the RAY_ADDRESS environment variable"
    elif source is not None:  # the ray_current_cluster file
        target += f", the address --address auto read from {source}"
        hint = (f"{source} is stale, left by a Ray cluster that stopped without `ray stop`; remove it (`rm {source}`, "
                "or `ray stop`, which also stops every Ray process on this machine), start that cluster again, "
                "pass --address HOST:PORT of a live cluster")
    return GoalscopeError(f"could not reach the Ray cluster at {target} ({why}): {hint}, or leave --address out to "
                          "run on a private local Ray instance")


def _auth_hint(error: BaseException) -> str:
    """What to add to a failed join: Ray (2.60 at least) turns token authentication on for a ``ray start``
    cluster wherever a token exists (``~/.ray/auth_token``, which any ``ray.init`` writes), and a driver that joins
    by an explicit address does not send it unless ``RAY_AUTH_MODE=token``. ``auto`` sends it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return ""
    chain, seen = [], error
    while seen is not None and len(chain) < 8:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    said = "the cluster refused this process's credentials" if any("uthenticat" in c for c in chain) else \
        "if the cluster uses Ray's token authentication"
    return (f" ({said}: set RAY_AUTH_MODE=token, with the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH, or on a node of the cluster use --address auto)")


class RayExecutor:
    """Each item is a Ray task with ``num_cpus=1``; results come back in order, progress as tasks finish.

    ``address=None`` starts a private local Ray instance with ``workers`` CPUs (0: all of them), whatever the machine
    runs already: a live ``ray start`` cluster, a stale ``ray_current_cluster`` file and ``RAY_ADDRESS`` are all
    ignored (it is ``ray.init(address="local")``). If this process is already connected to Ray, that connection is
    used as it is. ``"auto"`` joins the cluster this node belongs to (``RAY_ADDRESS``, else the cluster the last
    ``ray start`` recorded, as ``ray.init("auto")`` finds it); ``"HOST:PORT"`` joins that cluster's GCS;
    ``"ray://HOST:10001"`` connects through Ray Client. A cluster address is first checked with a TCP connection
    (``RAY_PROBE_TIMEOUT_S``): a dead one is a :class:`GoalscopeError` naming where the address came from, rather
    than Ray's minutes of retries. Ray is started on the first ``run``, not here.
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
            if self.address is None:
                # "local", not None: None would join RAY_ADDRESS or the cluster in ray_current_cluster (alive or
                # long dead) and then refuse num_cpus. These options only apply to an instance we start.
                kwargs = dict(address="local", num_cpus=self.workers or None, include_dashboard=False)
                where = "a private local Ray instance"
            else:
                target, source = _resolve_ray_address(self.address)
                if target is not None:
                    why = _probe(target, RAY_PROBE_TIMEOUT_S)
                    if why is not None:
                        raise _unreachable(target, source, why)
                kwargs = dict(address=self.address)
                where = f"the Ray cluster at {self.address!r}"
            try:
                ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
            except Exception as e:  # Ray raises bare Exception for some start failures
                msg = " ".join(str(e).split())  # one line
                if self.address is not None:
                    msg += _auth_hint(e)
                raise GoalscopeError(f"could not start or reach {where}: {msg}") from None
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
