"""Edits and decoding (issue 14): reward -> weights (``goalscope edits``, :func:`~goalscope.analysis.edits.run.run_edits`)
and weights -> reward (``goalscope decode``, :func:`~goalscope.analysis.edits.decode.run_decode`).

May import: goalscope.analysis (stats, records), goalscope.analysis.effects, goalscope.analysis.validate, goalscope.program
and below.
"""
