"""``manage.py df_workflow list|show|result|signal|cancel``: ``df workflow`` for this project."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dfcore import DFError, cli

from ...runtime import get_app
from .. import global_options_after_actions


class Command(BaseCommand):
    help = "Inspect and control this project's workflows (the actions of `df workflow`)."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_workflow_arguments(parser, with_app=False)
        global_options_after_actions(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cli.run_workflow_command(get_app(), argparse.Namespace(**options), out=self.stdout)
        except DFError as exc:
            raise CommandError(str(exc)) from exc
