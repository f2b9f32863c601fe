"""Executors run independent jobs; the runner decides what is independent (one dependency wave at a time).

An executor is anything with ``run(fn, items, desc) -> list`` that calls the picklable ``fn(item)`` for every item
and returns the results in order. The embedded default is a pool of local processes, one torch thread each:
small networks gain nothing from a second thread and lose badly when cores are shared, so parallelism comes from
running jobs side by side. Register another executor (a cluster, a queue) in ``EXECUTORS``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Protocol

from goalscope.errors import ConfigError


class Executor(Protocol):
    def run(self, fn: Callable, items: list, desc: str = "") -> list: ...


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="job", leave=True, disable=total == 0 or os.environ.get("GOALSCOPE_QUIET") == "1")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


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
            with ProcessPoolExecutor(min(self.workers, len(items)), mp_context=ctx, initializer=_init_worker) as pool:
                futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
        return results


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def make_executor(name: str, **options) -> Executor:
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r} (known: {', '.join(sorted(EXECUTORS))})")
    return EXECUTORS[name](**options)
