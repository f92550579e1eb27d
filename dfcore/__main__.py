"""``python -m dfcore`` is the ``df`` command."""

import sys

from dfcore.cli._argparse import main

sys.exit(main())
