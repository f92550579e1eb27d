"""``flask df``: the core CLI's commands for the current Flask app, and the outbox's own.

``worker``, ``dev``, ``workflow`` and ``dlq`` are the very click commands of ``dfcore``
(:data:`dfcore.cli.COMMANDS`), run with a host that takes the app from Flask, relays the
SQLAlchemy outbox, keeps the dev server's data in the instance folder and serves the app with
Werkzeug. ``relay`` and ``create-outbox`` are Flask's. ``flask df COMMAND --help`` lists the
options.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from werkzeug.serving import make_server

from dfcore import App, cli

from .extension import EXTENSION, DFState


def _state() -> DFState:
    state = current_app.extensions.get(EXTENSION)
    if state is None:
        raise click.UsageError(
            f"DurableFuture is not registered on the Flask app {current_app.name!r}: "
            "call DurableFuture(app) or df.init_app(app) in your app factory"
        )
    return state  # type: ignore[no-any-return]


def _outbox_engines(state: DFState) -> list[Any]:
    engines = state.outbox_engines()
    if not engines:
        raise click.UsageError(
            "no outbox database: set DF_OUTBOX_DATABASE_URI, or register Flask-SQLAlchemy "
            "on the app"
        )
    return engines


def flask_host(app: Flask, state: DFState) -> cli.Host:
    """The commands' host for ``app``, on which ``state`` is registered."""

    def start_relay(stop: threading.Event) -> bool:
        return state.settings.outbox.worker_relay and state.start_relay(stop)

    def use_server(url: str) -> App:
        app.config["DF_NATS_URL"] = url
        state.app.configure(nats_url=url)
        return state.app

    return cli.Host(
        name="flask df",
        get_app=lambda: state.app,
        dev_data=lambda: Path(app.instance_path) / "df",
        start_relay=start_relay,
        use_server=use_server,
        web=_werkzeug(app),
        web_port=5000,
        extra_settings=lambda name: _extra_settings(app, name),
    )


def _extra_settings(app: Flask, name: str) -> dict[str, Any]:
    """An extra's keys in the app's config: ``DF_DASHBOARD_USER`` is the dashboard's ``user``."""
    prefix = f"DF_{name.upper()}_"
    return {k[len(prefix) :].lower(): v for k, v in app.config.items() if k.startswith(prefix)}


def _werkzeug(app: Flask) -> Callable[[str, int, Callable[[str], None]], None]:
    def serve(host: str, port: int, announce: Callable[[str], None]) -> None:
        web = make_server(host, port, app, threaded=True)
        try:
            announce(f"http://{host}:{web.server_port}/")
            web.serve_forever()
        finally:
            web.server_close()

    return serve


@click.group("df", cls=AppGroup, context_settings=cli.CONTEXT)
@with_appcontext
@click.pass_context
def df_group(ctx: click.Context) -> None:
    """Run DurableFuture workers, the dev server and relays; inspect workflows."""
    ctx.obj = flask_host(current_app._get_current_object(), _state())  # type: ignore[attr-defined]


for _command in cli.COMMANDS:
    df_group.add_command(_command)


@df_group.command("relay", context_settings=cli.CONTEXT)
@click.option("--once", is_flag=True, help="Publish everything pending, then exit.")
@click.option("-l", "--loglevel", default="INFO", help="Logging level (DEBUG, INFO, WARNING...).")
def relay_command(once: bool, loglevel: str) -> None:
    """Publish workflow starts a crash left in the outbox.

    `flask df worker` runs a relay too; run this one when workers run elsewhere. On
    PostgreSQL several may run at once.
    """
    cli.setup_logging(loglevel)
    state = _state()
    _outbox_engines(state)
    relay = state.make_relay()
    if once:
        click.echo(f"published {relay.drain()} workflow start(s) from the outbox")
        return
    relay.run_until_signalled()


@df_group.command("create-outbox", context_settings=cli.CONTEXT)
def create_outbox_command() -> None:
    """Create the outbox tables in the outbox database if they do not exist."""
    from .outbox import create_outbox_tables

    for engine in _outbox_engines(_state()):
        create_outbox_tables(engine)
        click.echo(f"outbox tables ready in {engine.url.render_as_string(hide_password=True)}")
