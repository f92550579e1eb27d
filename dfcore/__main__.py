"""``python -m dfcore`` is the ``df`` command."""

import sys

from ._cli import main

sys.exit(main())
