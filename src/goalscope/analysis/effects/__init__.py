"""Program effects: the analysis stage ``goalscope run`` ends with
(:func:`~goalscope.analysis.effects.experiment.run_experiment`).

Negation with CIs (:mod:`~goalscope.analysis.effects.negation`), superposition heatmaps
(:mod:`~goalscope.analysis.effects.superposition`), the competence gate (:mod:`~goalscope.analysis.effects.competence`)
and a sweep's table (:mod:`~goalscope.analysis.effects.sweep_table`).

May import: goalscope.analysis.stats, goalscope.analysis.records, goalscope.program and below.
"""
