"""``manage.py df_dev``: an alias of ``manage.py df dev``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "Develop without installing anything: an embedded NATS JetStream server, a worker"
        " with the outbox relay and runserver, in one process (the same as `manage.py df "
        "dev`)."
    )
    word = "dev"
