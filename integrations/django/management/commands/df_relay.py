"""``manage.py df_relay``: an alias of ``manage.py df relay``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = "Publish workflow starts a crash left in the outbox (the same as `manage.py df relay`)."
    word = "relay"
