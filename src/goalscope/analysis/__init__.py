"""Analysis of a run: statistics, negation and superposition effects, validation (grafts, localisation, planted
objectives, entry points), pointer experiments and the tidy records every result is written as.

May import: goalscope.program and everything below it.
"""
