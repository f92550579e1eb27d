"""``manage.py df_dlq``: an alias of ``manage.py df dlq``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "List and show dead letters: messages the workers could not use, and why (the "
        "same as `manage.py df dlq`)."
    )
    word = "dlq"
