"""The ``goalscope`` command line: ``main`` and the parser, one module per command group.

May import anything in goalscope; nothing imports it.
"""

from goalscope.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
