"""``manage.py df_dashboard``: an alias of ``manage.py df dashboard``."""

from __future__ import annotations

from ...cli import TreeCommand


class Command(TreeCommand):
    help = (
        "Serve the web dashboard of this project's workflows (the same as "
        "`manage.py df dashboard`; needs the dashboard extra)."
    )
    word = "dashboard"
