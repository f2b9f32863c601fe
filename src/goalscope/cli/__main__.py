"""``python -m goalscope.cli``: the same as the ``goalscope`` command."""

import sys

from goalscope.cli.main import main

sys.exit(main())
