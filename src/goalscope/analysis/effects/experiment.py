"""The whole experiment program as one call: the cached stages of :mod:`goalscope.program.runner`, then the analysis.

Owns :func:`run_experiment` (``goalscope run``; ``goalscope.run_experiment``). It is here, not in the runner, because
the analysis it ends with sits above the program in the stack. May import: goalscope.program,
goalscope.analysis.effects.
"""

from __future__ import annotations

from pathlib import Path

from goalscope.program.config import ExperimentConfig
from goalscope.program.runner import run_stages


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, executor=None, force: str | None = None,
                   reconfigure: bool = False, log=print) -> dict:
    """Run (or resume) every stage of ``cfg`` in ``run_dir`` and write the analysis; returns the summary."""
    from goalscope.analysis.effects.negation import analyse

    return run_stages(cfg, run_dir, analyse=analyse, executor=executor, force=force, reconfigure=reconfigure, log=log)
