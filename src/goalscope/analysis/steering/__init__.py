"""Steering and shards (``goalscope steer``, :func:`~goalscope.analysis.steering.run.run_steering`): steering vectors
from MA/MB pairs beside weight edits of the same Δ_i, and shard diagnostics.

``run_steering`` and ``STEER_DIR`` are still importable from this package (the path of the module they had before the
split), imported on first use.

May import: goalscope.analysis (stats, records), the analysis families below it, goalscope.program and below.
"""

_MOVED = ("run_steering", "STEER_DIR")  # now in goalscope.analysis.steering.run


def __getattr__(name: str):
    if name in _MOVED:
        from goalscope.analysis.steering import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
