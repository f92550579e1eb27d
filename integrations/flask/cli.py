"""``flask df``: the ``df`` command for the current Flask app.

``flask df worker`` and ``flask df workflow`` parse their arguments with the core CLI's own
parsers (``dfcore.cli``), so they take exactly the options of ``df worker`` and ``df workflow``;
``flask df worker --help`` lists them.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Sequence
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from dfcore import DFError, cli

from .extension import EXTENSION, DFState

df_group = AppGroup("df", help="Run DurableFuture workers and relays, inspect workflows.")

# Hand every argument, --help included, to the core's argparse parser.
_PASSTHROUGH: dict[str, Any] = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


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


def _parse(
    prog: str, build: Callable[[argparse.ArgumentParser], None], argv: Sequence[str]
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    build(parser)
    return parser.parse_args(list(argv))


def _add_worker_arguments(parser: argparse.ArgumentParser, *, processes: bool = True) -> None:
    cli.add_worker_arguments(parser, processes=processes)
    parser.add_argument(
        "--no-relay",
        action="store_true",
        help="do not relay the transactional outbox in this worker "
        "(run `flask df relay`, or set DF_WORKER_RELAY = False)",
    )


@df_group.command(
    "worker",
    context_settings=_PASSTHROUGH,
    short_help="Run a worker for this app's workflows and activities (options of `df worker`).",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def worker_command(argv: Sequence[str]) -> None:
    """Run a worker, with the outbox relay; `flask df worker --help` lists the options."""
    args = _parse("flask df worker", _add_worker_arguments, argv)
    cli.setup_logging(args.loglevel)
    state = _state()
    if cli.supervise_if_asked(args):
        return
    stop = threading.Event()
    if state.settings.outbox.worker_relay and not args.no_relay:
        state.start_relay(stop)
    try:
        state.app.run_worker(**cli.worker_options(args))
    except DFError as exc:  # no server, a server too old: one line, not a traceback
        raise click.ClickException(str(exc)) from exc
    finally:
        stop.set()


@df_group.command("relay")
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


@df_group.command("create-outbox")
def create_outbox_command() -> None:
    """Create the outbox tables in the outbox database if they do not exist."""
    from .outbox import create_outbox_tables

    for engine in _outbox_engines(_state()):
        create_outbox_tables(engine)
        click.echo(f"outbox tables ready in {engine.url.render_as_string(hide_password=True)}")


@df_group.command(
    "workflow",
    context_settings=_PASSTHROUGH,
    short_help="Inspect and control workflows: list, show, result, signal, cancel.",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def workflow_command(argv: Sequence[str]) -> None:
    """The actions of `df workflow`; `flask df workflow --help` lists them."""
    args = _parse(
        "flask df workflow",
        lambda parser: cli.add_workflow_arguments(parser, with_app=False),
        argv,
    )
    try:
        cli.run_workflow_command(_state().app, args, out=click.get_text_stream("stdout"))
    except DFError as exc:
        raise click.ClickException(str(exc)) from exc


@df_group.command(
    "dlq",
    context_settings=_PASSTHROUGH,
    short_help="Inspect messages workers could not use (dead letters): list, show.",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def dlq_command(argv: Sequence[str]) -> None:
    """The actions of `df dlq`; `flask df dlq --help` lists them."""
    args = _parse(
        "flask df dlq", lambda parser: cli.add_dlq_arguments(parser, with_app=False), argv
    )
    try:
        cli.run_dlq_command(_state().app, args, out=click.get_text_stream("stdout"))
    except DFError as exc:
        raise click.ClickException(str(exc)) from exc


def _add_dev_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="web server address (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=5000, help="web server port (5000; 0 picks a free one)"
    )
    parser.add_argument(
        "--data-dir",
        help="where the NATS server keeps its data (default: df/ in the app's instance folder)",
    )
    parser.add_argument(
        "--nats-port",
        type=int,
        default=0,
        help="client port of the NATS server (default: that of DF_NATS_URL when it is on "
        "this machine, else the last run's)",
    )
    cli.add_nats_only_argument(parser)
    _add_worker_arguments(parser, processes=False)


@df_group.command(
    "dev",
    context_settings=_PASSTHROUGH,
    short_help="Embedded NATS, a worker with the outbox relay, and the dev web server.",
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def dev_command(argv: Sequence[str]) -> None:
    """Develop without installing anything: an embedded NATS JetStream server, a worker with
    the outbox relay, and the development web server, in one process. Ctrl-C stops all three.
    `flask df dev --help` lists the options."""
    from .dev import run_dev

    args = _parse("flask df dev", _add_dev_arguments, argv)
    cli.setup_logging(args.loglevel)
    try:
        run_dev(current_app._get_current_object(), _state(), args)  # type: ignore[attr-defined]
    except DFError as exc:
        raise click.ClickException(str(exc)) from exc
