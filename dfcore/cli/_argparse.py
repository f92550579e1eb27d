"""The ``df`` command: workers, the embedded development server, inspection, the demo.

Parsers are built by small ``add_*_arguments`` functions so that framework integrations
(``manage.py df_worker``, ``flask df worker``) reuse exactly the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from dfcore._app import App
from dfcore.cli._supervisor import is_child, processes_option, supervise
from dfcore.client._inspect import render_history
from dfcore.core._config import Advice, Settings
from dfcore.core._errors import ConfigurationError, DFError
from dfcore.jetstream._dlq import render_list as render_dead_letters
from dfcore.jetstream._dlq import render_one as render_dead_letter
from dfcore.jetstream._server import EmbeddedServer, port_in_use


def load_app(spec: str | None) -> App:
    """Import ``module:attribute`` (or ``module``, finding its App) and return the App."""
    if not spec:
        return App("df-cli")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DFError(f"cannot import {module_name!r} given with -A/--app: {exc}") from exc
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise DFError(f"{spec!r}: {module_name} has no App named {attr!r}")
        return app
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        raise DFError(
            f"{module_name} defines {len(apps)} App objects; name one with -A {module_name}:NAME"
        )
    return apps[0]


def add_app_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "-A",
        "--app",
        required=required,
        metavar="MODULE[:APP]",
        help="the module defining your App (and its workflows and activities)",
    )


def add_nats_only_argument(parser: argparse.ArgumentParser) -> None:
    """``--nats-only`` of the dev commands."""
    parser.add_argument(
        "--nats-only",
        action="store_true",
        help="run only the NATS server (start the worker and the web server yourself)",
    )


def add_worker_arguments(parser: argparse.ArgumentParser, *, processes: bool = True) -> None:
    """The worker options, shared by ``df worker`` and the framework commands.

    ``processes=False`` leaves out ``--processes`` (the dev commands run one worker in-process).
    """
    parser.add_argument(
        "-Q",
        "--queues",
        metavar="Q1,Q2",
        help="task queues to serve (default: the app's task_queue setting)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--workflows-only", action="store_true", help="serve only workflow tasks")
    only.add_argument("--activities-only", action="store_true", help="serve only activity tasks")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        metavar="N",
        help="max activities running at once (default: the activity_concurrency setting)",
    )
    parser.add_argument(
        "--workflow-concurrency",
        type=int,
        metavar="N",
        help="max workflow tasks processed at once (default: the workflow_concurrency setting)",
    )
    if processes:
        parser.add_argument(
            "-P",
            "--processes",
            type=_processes,
            default=1,
            metavar="N",
            help="run and supervise N worker processes ('auto': one per CPU core; default 1). "
            "A process that dies is restarted; SIGTERM drains them all",
        )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight work may finish before it is handed back",
    )
    parser.add_argument(
        "-l", "--loglevel", default="INFO", help="logging level (DEBUG, INFO, WARNING...)"
    )


def _processes(value: str) -> int:
    try:
        return processes_option(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def supervise_if_asked(args: argparse.Namespace) -> bool:
    """With ``--processes N`` (N > 1), run N supervised copies of this command, then True.

    Call it after the app is loaded (so a bad ``-A`` fails here, once) and before starting a
    worker or relay: those run in the children.
    """
    if args.processes <= 1 or is_child():
        return False
    status = supervise(args.processes, args.shutdown_timeout)
    if status:
        raise SystemExit(status)
    return True


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """Turn parsed worker arguments into ``App.worker(...)`` keyword arguments."""
    return {
        "task_queues": [q for q in (args.queues or "").split(",") if q] or None,
        "workflows": not args.activities_only,
        "activities": not args.workflows_only,
        "activity_concurrency": args.concurrency,
        "workflow_concurrency": args.workflow_concurrency,
        "shutdown_timeout": args.shutdown_timeout,
    }


def setup_logging(level: str) -> None:
    """Log to stderr (unless logging is configured already), dfcore at ``level``."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    logging.getLogger("dfcore").setLevel(level.upper())


def cmd_worker(args: argparse.Namespace) -> int:
    setup_logging(args.loglevel)
    app = load_app(args.app)
    if not supervise_if_asked(args):
        app.run_worker(**worker_options(args))
    return 0


# --- the dev commands' server -------------------------------------------------------------

_PORT_FILE = "port"  # in the data folder: the port of the last run, used again
_LOOPBACK = {"127.0.0.1", "localhost"}  # where the embedded server listens


def start_dev_server(data: Path, settings: Settings, port: int = 0) -> tuple[EmbeddedServer, str]:
    """Start the embedded server of a dev command (``df dev``, ``df_dev``, ``flask df dev``).

    Its port stays the same from run to run, so what other terminals were told keeps working:
    ``port`` when given; else the port of the configured URL, when the settings name one on
    this machine (then every process of the project reaches the server through its settings);
    else the port of the last run with this data folder, if it is free; else a free one.

    Returns:
        The running server, and what to tell the user about reaching it from other
        terminals, in the framework's terms (``settings.advice``).

    Raises:
        ConfigurationError: the server could not start (the port is taken, ...).
    """
    data.mkdir(parents=True, exist_ok=True)
    configured = _configured_local_port(settings)
    remembered = _remembered_port(data)
    chosen = port or configured or remembered
    if not port and configured and port_in_use("127.0.0.1", configured):
        raise ConfigurationError(
            f"{settings.advice.name('nats_url')} points at {settings.display_url}, where a "
            "server already listens, so the embedded one cannot start there: use that server "
            f"(run {settings.advice.run('worker')} against it), or give the embedded one "
            "another port with --port / --nats-port"
        )
    server = EmbeddedServer(
        data / "nats",
        port=chosen,
        log_file=str(data / "nats.log"),
        kill_with_parent=True,  # a crashed dev command leaves no server behind (Linux)
    )
    server.start()
    (data / _PORT_FILE).write_text(f"{server.port}\n")
    return server, _reaching_it(settings, server, configured)


def _url_configured(settings: Settings) -> bool:
    """Whether the settings name a server: set, and not the default (which the Flask
    extension writes into the config; a real NATS server's usual port besides)."""
    return "nats_url" in settings.sources and settings.nats_url != Settings().nats_url


def _configured_local_port(settings: Settings) -> int:
    """The port of a configured single URL on this machine (0: none was configured)."""
    if not _url_configured(settings) or len(settings.servers) != 1:
        return 0
    parts = urlsplit(settings.servers[0])
    try:
        configured = parts.port
    except ValueError:
        return 0
    if parts.scheme != "nats" or parts.hostname not in _LOOPBACK or not configured:
        return 0
    return configured


def _remembered_port(data: Path) -> int:
    try:
        port = int((data / _PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return 0
    return port if 0 < port < 65536 and not port_in_use("127.0.0.1", port) else 0


def _reaching_it(settings: Settings, server: EmbeddedServer, configured: int) -> str:
    where = settings.advice.name("nats_url")
    if configured == server.port:
        return f"Other processes of the project reach it through {where}."
    if _url_configured(settings):
        return (
            f"{where} points at {settings.display_url}, so the project's other processes use "
            f"that server, not this one; set it to {server.url} to use this one."
        )
    return (
        f"Other terminals reach it after `export DF_NATS_URL={server.url}` (the port stays the "
        "same from run to run)."
    )


def dev_banner(server: EmbeddedServer, data: Path, reach: str, advice: Advice) -> str:
    """What ``--nats-only`` prints: the server, how to reach it, and what to run beside it."""
    lines = [
        f"\nNATS JetStream  {server.url}  (data in {data}), and nothing else (--nats-only)",
        reach,
        f"Run a worker:   {advice.run('worker')}",
    ]
    if advice.web:
        lines.append(f"Run the site:   `{advice.web}`")
    lines.append("Ctrl-C stops the server.\n")
    return "\n".join(lines)


def wait_for_interrupt(announce: Callable[[], None]) -> None:
    """Call ``announce``, then block until Ctrl-C or SIGTERM (``--nats-only``, once the server
    runs). The signals are caught from before the announcement, which may prompt them."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in signals}
    try:
        announce()
        stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_dev(args: argparse.Namespace) -> int:
    setup_logging(args.loglevel)
    if not args.app and not args.nats_only:
        raise DFError("df dev needs -A/--app MODULE[:APP] (or --nats-only to run only NATS)")
    app = load_app(args.app)
    advice = app.settings.advice
    if args.app:  # the commands to suggest are this one's
        advice = dataclasses.replace(advice, command=f"df {{}} -A {args.app}")
    data = Path(args.data_dir)
    server, reach = start_dev_server(data, app.settings, args.port)
    os.environ["DF_NATS_URL"] = server.url
    try:
        if args.nats_only:
            wait_for_interrupt(lambda: print(dev_banner(server, data, reach, advice), flush=True))
            return 0
        app.configure(nats_url=server.url)
        print(f"\nEmbedded NATS JetStream running at {server.url} (data in {data}/nats).")
        print(f"{reach}\nTry it:  {advice.run('workflow list')}\n", flush=True)
        app.run_worker(**worker_options(args))
    finally:
        server.stop()
    return 0


def cmd_workflow(args: argparse.Namespace) -> int:
    return run_workflow_command(load_app(args.app), args)


def add_workflow_arguments(parser: argparse.ArgumentParser, with_app: bool = True) -> None:
    """The ``workflow list|show|result|signal|cancel`` actions, shared with integrations.

    Args:
        parser: the parser of the ``workflow`` command.
        with_app: add ``-A/--app`` to each action (integrations know their app).
    """
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="list recent workflows with their status")
    lst.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    show = actions.add_parser("show", help="print a workflow's status and event history")
    cancel = actions.add_parser("cancel", help="request cancellation of a workflow")
    signal = actions.add_parser("signal", help="send a signal to a workflow")
    result = actions.add_parser("result", help="wait for a workflow's result and print it")
    for action in (show, cancel, signal, result):
        action.add_argument("workflow_id")
    signal.add_argument("name", help="the signal name the workflow waits for")
    signal.add_argument("payload", nargs="?", help="JSON payload")
    result.add_argument("--timeout", type=float, default=None, help="seconds to wait")
    if with_app:
        for action in (lst, show, cancel, signal, result):
            add_app_argument(action)


def run_workflow_command(app: App, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Carry out a ``workflow`` action parsed by :func:`add_workflow_arguments`."""
    out = out or sys.stdout

    def emit(text: str) -> None:
        out.write(text + "\n")  # not print(): Django's OutputWrapper adds its own newline

    if args.action == "list":
        rows = app.list_workflows(limit=args.limit)
        emit(f"{'WORKFLOW ID':40}  {'STATUS':10}  LAST EVENT")
        for row in rows:
            when = row.last_event_time.isoformat(timespec="seconds") if row.last_event_time else ""
            emit(f"{row.workflow_id:40}  {row.status:10}  {when}")
        return 0
    handle = app.get_handle(args.workflow_id)
    if args.action == "show":
        status = handle.status()
        emit(f"Workflow {args.workflow_id} ({status.workflow_type}): {status.status}")
        if status.failure:
            emit(f"  failing: {status.failure}")
        emit(render_history(handle.history()))
    elif args.action == "cancel":
        handle.cancel()
        emit(f"cancellation requested for {args.workflow_id}")
    elif args.action == "signal":
        payload = orjson.loads(args.payload) if args.payload else None
        handle.signal(args.name, payload)
        emit(f"signal {args.name!r} sent to {args.workflow_id}")
    elif args.action == "result":
        result = handle.result(timeout=args.timeout)
        emit(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    return run_dlq_command(load_app(args.app), args)


def add_dlq_arguments(parser: argparse.ArgumentParser, with_app: bool = True) -> None:
    """The ``dlq list|show`` actions: messages workers could not use, and why."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="list the newest dead letters with their reasons")
    lst.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    show = actions.add_parser("show", help="print one dead letter: reason, origin, headers, body")
    show.add_argument("seq", type=int, help="its number, as `dlq list` shows it")
    if with_app:
        for action in (lst, show):
            add_app_argument(action)


def run_dlq_command(app: App, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Carry out a ``dlq`` action parsed by :func:`add_dlq_arguments`."""
    out = out or sys.stdout
    if args.action == "list":
        letters = app.dead_letters(limit=args.limit)
        out.write(render_dead_letters(letters) + "\n")
        if not letters:
            out.write("(no dead letters)\n")
    else:
        out.write(render_dead_letter(app.dead_letter(args.seq)) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dfcore.cli._demo import main as demo_main

    return demo_main(args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="df", description="DurableFuture command line")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker for an app")
    add_app_argument(worker, required=True)
    add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="start an embedded NATS JetStream server and a worker")
    add_app_argument(dev)
    add_worker_arguments(dev, processes=False)
    dev.add_argument("--data-dir", default=".df", help="where the server keeps its data (.df)")
    dev.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the server (default: the configured URL's, else the last run's)",
    )
    add_nats_only_argument(dev)
    dev.set_defaults(func=cmd_dev)

    demo = sub.add_parser("demo", help="run the order demo on an embedded server")
    demo.add_argument("--data-dir", default=".df/demo", help="where the server keeps its data")
    demo.set_defaults(func=cmd_demo)

    wf = sub.add_parser("workflow", help="inspect and control workflows")
    add_workflow_arguments(wf)
    wf.set_defaults(func=cmd_workflow)

    dlq = sub.add_parser("dlq", help="inspect messages workers could not use (dead letters)")
    add_dlq_arguments(dlq)
    dlq.set_defaults(func=cmd_dlq)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DFError as exc:
        print(f"df: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
