"""``manage.py df_worker``: an alias of ``manage.py df worker``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "Run a worker for this project's workflows and activities, with the outbox relay "
        "(the same as `manage.py df worker`)."
    )
    word = "worker"
