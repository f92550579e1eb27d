"""``manage.py df_workflow``: an alias of ``manage.py df workflow``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "Inspect and control this project's workflows: list, show, result, signal, cancel"
        " (the same as `manage.py df workflow`)."
    )
    word = "workflow"
