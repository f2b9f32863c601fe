"""``python -m goalscope.cli``: the same as the ``goalscope`` command. May import: goalscope.cli.main."""

import sys

from goalscope.cli.main import main

sys.exit(main())
