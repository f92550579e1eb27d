"""``manage.py df_dlq list|show``: ``df dlq`` for this project (messages workers could not use)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dfcore import DFError, cli

from ...runtime import get_app
from .. import global_options_after_actions


class Command(BaseCommand):
    help = "List and show dead letters: messages the workers could not use, and why."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_dlq_arguments(parser, with_app=False)
        global_options_after_actions(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cli.run_dlq_command(get_app(), argparse.Namespace(**options), out=self.stdout)
        except DFError as exc:
            raise CommandError(str(exc)) from exc
