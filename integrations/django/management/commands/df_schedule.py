"""``manage.py df_schedule``: an alias of ``manage.py df schedule``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "List, show, pause, resume, trigger and delete schedules (the same as "
        "`manage.py df schedule`)."
    )
    word = "schedule"
