"""Analysis of a run, by family (one subpackage each), on a shared floor.

- :mod:`~goalscope.analysis.effects`: the analysis stage of ``goalscope run`` (negation with CIs, superposition
  heatmaps, the competence gate) and a sweep's table;
- :mod:`~goalscope.analysis.validate`: ``goalscope validate`` (grafts, ablations, nulls), its scorecard, planted-truth
  localisation and RB's entry plane;
- :mod:`~goalscope.analysis.edits`: ``goalscope edits`` (reward -> weights) and ``goalscope decode`` (weights -> reward);
- :mod:`~goalscope.analysis.steering`: ``goalscope steer`` (steering vectors beside weight edits) and shard diagnostics;
- :mod:`~goalscope.analysis.pointers`: objectives as pointers (``goalscope pointers``), decided against the cue-blind
  reference of :mod:`~goalscope.analysis.pointer_reference`.

The floor every family shares: :mod:`~goalscope.analysis.stats` (intervals, tests, corrections) and
:mod:`~goalscope.analysis.records` (the tidy records every result is written as). Families import the floor and the
families below them, in this order: effects, validate, edits, steering, pointers (tests/test_layout.py).
:mod:`goalscope.analysis.experiment` is the old path of ``run_experiment``, kept as an alias.

May import: goalscope.program and everything below it.
"""
