"""``flask df dev``: the whole app in one process, for development.

An embedded NATS JetStream server (data in the app's instance folder), a worker with the outbox
relay on background threads, and Werkzeug's development server in the foreground. Ctrl-C or
SIGTERM stops all three. In production run NATS, ``flask df worker`` and a real web server.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

import click
from flask import Flask
from werkzeug.serving import make_server

from dfcore import ConfigurationError, cli

from .extension import DFState


def run_dev(app: Flask, state: DFState, args: argparse.Namespace) -> None:
    """Serve ``app`` with NATS, a worker and the relay until Ctrl-C or SIGTERM."""
    data = Path(args.data_dir or Path(app.instance_path) / "df").resolve()
    settings = state.app.settings
    try:
        server, reach = cli.start_dev_server(data, settings, args.nats_port)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    if args.nats_only:
        try:
            cli.wait_for_interrupt(
                lambda: click.echo(cli.dev_banner(server, data, reach, settings.advice))
            )
        finally:
            server.stop()
        return
    stop_relay = threading.Event()
    worker: cli.WorkerThread | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        app.config["DF_NATS_URL"] = server.url
        state.app.configure(nats_url=server.url)
        worker = cli.WorkerThread(state.app.worker(**cli.worker_options(args)))
        worker.start()
        relaying = state.settings.outbox.worker_relay and not args.no_relay
        relaying = relaying and state.start_relay(stop_relay)
        web = make_server(args.host, args.port, app, threaded=True)
        relay = ", with the outbox relay" if relaying else ", no outbox relay"
        click.echo(
            f"\nNATS JetStream  {server.url}  (data in {data})\n"
            f"Worker          namespace {state.app.settings.namespace!r}, queues "
            f"{', '.join(worker.worker.queues)}{relay}\n"
            f"Site            http://{args.host}:{web.server_port}/\n"
            f"{reach}\n"
        )
        try:
            web.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            web.server_close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_relay.set()
        if worker is not None:
            worker.stop()
        state.app.close()  # the web's and the relay's connection, before NATS stops
        server.stop()
        click.echo("flask df dev: stopped the web server, the worker and NATS")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the server as Ctrl-C does."""
    raise KeyboardInterrupt
