"""``manage.py df_relay``: publish workflow starts left in the transactional outbox."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dfcore import cli

from ...outbox import make_relay


class Command(BaseCommand):
    help = (
        "Publish workflow starts that a crash left in the outbox. `df_worker` runs a relay "
        "too; run this one when workers run elsewhere. On PostgreSQL several may run at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="publish everything pending, then exit"
        )
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            metavar="ALIAS",
            help='a database to relay from (repeatable; default: DFCORE["OUTBOX_DATABASES"] '
            "or every database the outbox is migrated to)",
        )
        parser.add_argument(
            "-l", "--loglevel", default="INFO", help="logging level (DEBUG, INFO, WARNING...)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cli.setup_logging(options["loglevel"])
        relay = make_relay(options["databases"])
        if options["once"]:
            self.stdout.write(f"published {relay.drain()} workflow start(s) from the outbox")
            return
        relay.run_until_signalled()
