"""Validation (``goalscope validate``): grafts and ablations against sensitivity-matched nulls, held-out RBs, the
scorecard, planted-truth localisation and RB's own input plane in the first layer.

:mod:`~goalscope.analysis.validate.ranking` (AUROC, precision@k) sits below :mod:`~goalscope.analysis.validate.planted`
and :mod:`~goalscope.analysis.validate.grafts`, which both score rankings with it.

May import: goalscope.analysis (stats, records), goalscope.analysis.effects, goalscope.program and below.
"""
