"""``manage.py df_dev``: the whole project in one process, for development.

An embedded NATS JetStream server (data in ``.df/`` next to ``manage.py``), a worker with the
outbox relay on a background thread, and ``runserver`` in the foreground. Ctrl-C or SIGTERM
stops all three. In production run NATS, ``df_worker`` and your web server separately.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError, CommandParser

from dfcore import App, ConfigurationError, DFError, EmbeddedServer, cli

from ... import runtime
from ...outbox import make_relay


class Command(BaseCommand):
    help = (
        "Develop without installing anything: start an embedded NATS JetStream server, a "
        "worker with the outbox relay, and the development web server, in one process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default="",
            help="address and port of the web server, as for "
            "runserver (default 127.0.0.1:8000; port 0 picks a free one)",
        )
        parser.add_argument(
            "--data-dir",
            help="where the NATS server keeps its data (default: .df next to manage.py)",
        )
        parser.add_argument(
            "--nats-port",
            type=int,
            default=0,
            help='client port of the NATS server (default: that of DFCORE["NATS_URL"] when it '
            "is on this machine, else the last run's)",
        )
        cli.add_nats_only_argument(parser)
        parser.add_argument(
            "--no-relay", action="store_true", help="do not relay the transactional outbox"
        )
        cli.add_worker_arguments(parser, processes=False)

    def handle(self, *args: Any, **options: Any) -> None:
        cli.setup_logging(options["loglevel"])
        data = Path(options["data_dir"] or _project_dir() / ".df").resolve()
        settings = runtime.get_app().settings
        try:
            server, reach = cli.start_dev_server(data, settings, options["nats_port"])
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        if options["nats_only"]:
            try:

                def announce() -> None:
                    self.stdout.write(cli.dev_banner(server, data, reach, settings.advice))
                    self.stdout.flush()

                cli.wait_for_interrupt(announce)
            finally:
                server.stop()
            return
        stop_relay = threading.Event()
        app: App | None = None
        worker: cli.WorkerThread | None = None
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            app = self._use_server(server)
            worker = cli.WorkerThread(
                app.worker(**cli.worker_options(argparse.Namespace(**options)))
            )
            try:
                worker.start()
            except DFError as exc:
                raise CommandError(str(exc)) from exc
            relay = runtime.get_settings().worker_relay and not options["no_relay"]
            if relay:
                make_relay().start_thread(stop_relay)
            serving = (
                f"namespace {app.settings.namespace!r}, queues {', '.join(worker.worker.queues)}"
            )
            serving += ", with the outbox relay" if relay else ", no outbox relay"
            self._runserver(options["addrport"], server, data, serving, reach)
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop_relay.set()
            if worker is not None:
                worker.stop()
            if app is not None:
                app.close()  # the web's and the relay's connection, before NATS stops
            server.stop()
            self.stdout.write("df_dev: stopped the web server, the worker and NATS")

    def _use_server(self, server: EmbeddedServer) -> App:
        """Point the project App, and the processes this one starts, at ``server``."""
        os.environ["DF_NATS_URL"] = server.url
        runtime.reset()  # read DFCORE again: without NATS_URL, the environment supplies it
        app = runtime.get_app()
        if app.settings.nats_url != server.url:
            self.stderr.write(
                f'df_dev: settings.DFCORE["NATS_URL"] is {app.settings.display_url!r}; '
                f"using the embedded server {server.url} instead"
            )
            app.configure(nats_url=server.url)
        return app

    def _runserver(
        self, addrport: str, server: EmbeddedServer, data: Path, serving: str, reach: str
    ) -> None:
        """Run ``runserver`` (the project's, e.g. staticfiles') until Ctrl-C or SIGTERM."""
        command = load_command_class(get_commands()["runserver"], "runserver")
        announce = command.on_bind

        def on_bind(port: int) -> None:
            announce(port)
            host = "127.0.0.1" if command.addr in ("0", "0.0.0.0") else command.addr
            host = f"[{host}]" if ":" in host else host
            site = f"{command.protocol}://{host}:{port}/"
            self.stdout.write(
                f"\nNATS JetStream  {server.url}  (data in {data})\n"
                f"Worker          {serving}\n"
                f"Site            {site}  (admin: {site}admin/)\n"
                f"{reach}\n"
            )
            self.stdout.flush()

        command.on_bind = on_bind  # type: ignore[method-assign]
        # No autoreloader: it would restart this process, and NATS and the worker with it.
        call_command(command, addrport, use_reloader=False)


def _project_dir() -> Path:
    """The folder of ``manage.py``: settings.BASE_DIR by convention, else the current one."""
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops runserver as Ctrl-C does (it only handles KeyboardInterrupt)."""
    raise KeyboardInterrupt
