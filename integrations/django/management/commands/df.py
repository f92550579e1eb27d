"""``manage.py df``: the DurableFuture command tree for this project."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "Run DurableFuture for this project: `manage.py df "
        "worker|dev|relay|workflow|dlq`; `manage.py df --help` lists them."
    )
