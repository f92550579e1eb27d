"""Deprecated: the argparse helpers of the command line before it became a click group.

``dfcore.cli`` hands these out with a ``DeprecationWarning`` (see its ``__getattr__``). They
keep working: the parsers are as they were, and the actions run the click commands.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import click

from dfcore._app import App
from dfcore.cli._commands import dlq, workflow
from dfcore.cli._dev import dev_banner, start_dev_server, wait_for_interrupt
from dfcore.cli._host import Host
from dfcore.cli._supervisor import is_child, processes_option, supervise
from dfcore.core._errors import DFError

__all__ = [
    "add_dlq_arguments",
    "add_nats_only_argument",
    "add_worker_arguments",
    "add_workflow_arguments",
    "dev_banner",
    "run_dlq_command",
    "run_workflow_command",
    "start_dev_server",
    "supervise_if_asked",
    "wait_for_interrupt",
    "worker_options",
]


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
    """The worker options, shared by ``dfcore worker`` and the framework commands.

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
    words = [args.action]
    if args.action == "list":
        words += ["--limit", str(args.limit)]
    else:
        words.append(args.workflow_id)
    if args.action == "signal":
        words += [args.name, *([args.payload] if args.payload else [])]
    if args.action == "result" and args.timeout is not None:
        words += ["--timeout", str(args.timeout)]
    return _run(workflow, words, app, out)


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
    words = (
        ["list", "--limit", str(args.limit)] if args.action == "list" else ["show", str(args.seq)]
    )
    return _run(dlq, words, app, out)


def _run(group: click.Group, words: list[str], app: App, out: TextIO | None) -> int:
    stream = out or sys.stdout

    def echo(line: str) -> None:
        stream.write(line + "\n")  # not print(): Django's OutputWrapper adds its own newline

    host = Host(name="dfcore", get_app=lambda: app, echo=echo)
    try:
        group.main(args=words, prog_name=group.name, obj=host, standalone_mode=False)
    except click.ClickException as exc:
        raise DFError(exc.format_message()) from exc
    return 0
