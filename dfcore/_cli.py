"""The ``df`` command: workers, the embedded development server, inspection, the demo.

Parsers are built by small ``add_*_arguments`` functions so that framework integrations
(``manage.py df_worker``, ``flask df worker``) reuse exactly the same options.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from ._app import App
from ._dlq import render_list as render_dead_letters
from ._dlq import render_one as render_dead_letter
from ._errors import DFError
from ._inspect import render_history
from ._server import EmbeddedServer
from ._supervisor import is_child, processes_option, supervise


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


def cmd_dev(args: argparse.Namespace) -> int:
    setup_logging(args.loglevel)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(
        data / "nats", port=args.port, log_file=str(data / "nats.log"), kill_with_parent=True
    )
    server.start()
    os.environ["DF_NATS_URL"] = server.url
    try:
        app = load_app(args.app)
        app.configure(nats_url=server.url)
        print(f"\nEmbedded NATS JetStream running at {server.url} (data in {data}/nats).")
        print(f"Point other processes at it with:  export DF_NATS_URL={server.url}\n", flush=True)
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
    from ._demo import main as demo_main

    return demo_main(args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="df", description="DurableFuture command line")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker for an app")
    add_app_argument(worker, required=True)
    add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    dev = sub.add_parser("dev", help="start an embedded NATS JetStream server and a worker")
    add_app_argument(dev, required=True)
    add_worker_arguments(dev, processes=False)
    dev.add_argument("--data-dir", default=".df", help="where the server keeps its data (.df)")
    dev.add_argument(
        "--port", type=int, default=0, help="port for the server (default: a free one)"
    )
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
