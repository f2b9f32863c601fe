"""The path :func:`run_experiment` had before ``analysis/`` was split by family, kept for code that imports it.

Its home is :mod:`goalscope.analysis.effects.experiment` (``goalscope.run_experiment`` names the same function).
May import: goalscope.analysis.effects.experiment.
"""

from goalscope.analysis.effects.experiment import run_experiment

__all__ = ["run_experiment"]
