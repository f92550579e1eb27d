"""``manage.py df_worker``: ``df worker`` for this project, plus the outbox relay."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dfcore import DFError, cli

from ...outbox import make_relay
from ...runtime import get_app, get_settings


class Command(BaseCommand):
    help = (
        "Run a DurableFuture worker for this project's workflows and activities, with the "
        "outbox relay (the options of `df worker`)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_worker_arguments(parser)
        parser.add_argument(
            "--no-relay",
            action="store_true",
            help="do not relay the transactional outbox in this worker "
            '(run `manage.py df_relay`, or set DFCORE["WORKER_RELAY"] = False)',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cli.setup_logging(options["loglevel"])
        app = get_app()
        if cli.supervise_if_asked(argparse.Namespace(**options)):
            return
        stop = threading.Event()
        if get_settings().worker_relay and not options["no_relay"]:
            make_relay().start_thread(stop)
        try:
            app.run_worker(**cli.worker_options(argparse.Namespace(**options)))
        except DFError as exc:  # no server, a server too old: one line, not a traceback
            raise CommandError(str(exc)) from exc
        finally:
            stop.set()
