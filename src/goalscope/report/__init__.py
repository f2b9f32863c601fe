"""The report: one run loader shared by every consumer (HTML page, CLI, notebooks), figure functions that return
matplotlib Figures, and the page that assembles them.

May import: goalscope.analysis and everything below it.
"""
