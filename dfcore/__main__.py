"""``python -m dfcore`` is the ``dfcore`` command."""

import sys

from dfcore.cli._commands import main

sys.exit(main())
