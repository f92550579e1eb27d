"""The command tree: ``dfcore`` itself, and the commands ``flask df`` and ``manage.py df`` add.

``worker``, ``dev``, ``workflow`` and ``dlq`` are written once, here, as click commands that read
their :class:`Host` from the click context. The core CLI's group sets a host that loads the App
named by ``-A``; the Flask and Django integrations add :data:`COMMANDS` to their own groups with
a host of their own. ``demo`` is the core CLI's only.

Shell completion is click's: ``eval "$(_DFCORE_COMPLETE=bash_source dfcore)"`` (docs/cli.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from dfcore.cli._dev import DevOptions, run_dev
from dfcore.cli._host import Host, current_host, load_app
from dfcore.cli._logging import log_format_option, setup_logging
from dfcore.cli._plugins import commands
from dfcore.cli._supervisor import child_slot, is_child, processes_option, supervise
from dfcore.client._inspect import render_history
from dfcore.core._errors import DFError
from dfcore.jetstream._dlq import render_list as render_dead_letters
from dfcore.jetstream._dlq import render_one as render_dead_letter

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _set_app(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    host = ctx.find_object(Host)
    if host is None or not host.takes_app_option:
        where = host.name if host is not None else "this program"
        raise click.UsageError(
            f"-A/--app is the dfcore command's; {where} knows its app already: leave -A out"
        )
    host.app_spec = value


def app_option(*, hidden: bool) -> Callable[[F], F]:
    """``-A/--app MODULE[:APP]``: on the core group, and (hidden) after any command too."""
    return click.option(
        "-A",
        "--app",
        metavar="MODULE[:APP]",
        callback=_set_app,
        expose_value=False,
        is_eager=True,
        hidden=hidden,
        help="The module defining your App (and its workflows and activities).",
    )


def _processes(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return processes_option(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _loglevel(command: F) -> F:
    return click.option(
        "-l",
        "--loglevel",
        default="INFO",
        show_default=True,
        help="Logging level (DEBUG, INFO, WARNING...).",
    )(command)


def _worker_options(command: F) -> F:
    """The options of a worker, shared by ``worker`` and ``dev``."""
    options = [
        click.option(
            "-Q",
            "--queues",
            metavar="Q1,Q2",
            help="Task queues to serve (default: the app's task_queue setting).",
        ),
        click.option("--workflows-only", is_flag=True, help="Serve only workflow tasks."),
        click.option("--activities-only", is_flag=True, help="Serve only activity tasks."),
        click.option(
            "-c",
            "--concurrency",
            type=click.IntRange(min=1),
            metavar="N",
            help="Max activities running at once (default: the activity_concurrency setting).",
        ),
        click.option(
            "--workflow-concurrency",
            type=click.IntRange(min=1),
            metavar="N",
            help="Max workflow tasks processed at once (default: the workflow_concurrency "
            "setting).",
        ),
        click.option(
            "--shutdown-timeout",
            type=float,
            default=30.0,
            show_default=True,
            metavar="SECONDS",
            help="On SIGTERM, how long in-flight work may finish before it is handed back.",
        ),
        click.option(
            "--no-relay",
            is_flag=True,
            help="Do not relay the transactional outbox in this process (Django and Flask "
            "projects; run the relay command instead).",
        ),
        click.option(
            "--metrics-port",
            metavar="[HOST:]PORT",
            envvar="DF_METRICS_PORT",
            help="Serve Prometheus metrics on http://HOST:PORT/metrics (HOST: 127.0.0.1; use "
            "0.0.0.0:PORT to be scraped from elsewhere). With -P N, process k serves PORT+k.",
        ),
        _loglevel,
        log_format_option,
        app_option(hidden=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def worker_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """``App.worker(...)`` keyword arguments from the parsed worker options."""
    if options["workflows_only"] and options["activities_only"]:
        raise click.UsageError("--workflows-only and --activities-only exclude each other")
    return {
        "task_queues": [q for q in (options["queues"] or "").split(",") if q] or None,
        "workflows": not options["activities_only"],
        "activities": not options["workflows_only"],
        "activity_concurrency": options["concurrency"],
        "workflow_concurrency": options["workflow_concurrency"],
        "shutdown_timeout": options["shutdown_timeout"],
        **_metrics_kwargs(options.get("metrics_port")),
    }


def _metrics_kwargs(value: str | None) -> dict[str, Any]:
    """``metrics_port``/``metrics_host`` from ``--metrics-port``; a supervised child adds its
    number to the port, so each process of ``-P N`` has its own."""
    try:
        host, port = _addrport(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--metrics-port") from None
    if port is None:
        return {}
    if port and is_child():
        port += child_slot()
    return {"metrics_port": port, "metrics_host": host or "127.0.0.1"}


@click.command(context_settings=CONTEXT)
@click.option(
    "-P",
    "--processes",
    default="1",
    callback=_processes,
    metavar="N",
    help="Run and supervise N worker processes ('auto': one per CPU core; default 1). A "
    "process that dies is restarted; SIGTERM drains them all.",
)
@_worker_options
def worker(processes: int, no_relay: bool, loglevel: str, log_format: str, **options: Any) -> None:
    """Run a worker for the app's workflows and activities (with the outbox relay, where the
    project has one). SIGTERM or Ctrl-C drains in-flight work first."""
    setup_logging(loglevel, log_format)
    host = current_host()
    app = host.app()  # a bad app fails here, once, not in each supervised child
    kwargs = worker_kwargs(options)
    if processes > 1 and not is_child():
        raise SystemExit(supervise(processes, options["shutdown_timeout"]))
    stop = threading.Event()
    if host.start_relay is not None and not no_relay:
        host.start_relay(stop)
    try:
        app.run_worker(**kwargs)
    except DFError as exc:  # no server, a server too old: one line, not a traceback
        raise click.ClickException(str(exc)) from exc
    finally:
        stop.set()


def _addrport(value: str | None) -> tuple[str | None, int | None]:
    """``ADDRPORT`` as runserver takes it: ``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``."""
    if not value:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    if not port.isdigit():
        raise click.BadParameter(f"{value!r} is not a port or HOST:PORT", param_hint="ADDRPORT")
    return host.strip("[]") or None, int(port)


@click.command(context_settings=CONTEXT)
@click.argument("addrport", required=False)
@click.option("--host", "web_host", metavar="HOST", help="Web server address (127.0.0.1).")
@click.option(
    "--port", "web_port", type=int, metavar="PORT", help="Web server port (0 picks a free one)."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the NATS server keeps its data (default: .df in the project; for Flask, df/ "
    "in the instance folder).",
)
@click.option(
    "--nats-port",
    type=int,
    default=0,
    help="Client port of the NATS server (default: that of the configured NATS URL when it "
    "is on this machine, else the last run's).",
)
@click.option(
    "--nats-only",
    is_flag=True,
    help="Run only the NATS server (start the worker and the web server yourself).",
)
@click.option(
    "--no-dashboard",
    is_flag=True,
    help="Do not serve the dashboard beside the site (it runs when its extra is installed).",
)
@_worker_options
def dev(
    addrport: str | None,
    web_host: str | None,
    web_port: int | None,
    data_dir: Path | None,
    nats_port: int,
    nats_only: bool,
    no_dashboard: bool,
    no_relay: bool,
    loglevel: str,
    log_format: str,
    **options: Any,
) -> None:
    """Develop without installing anything: an embedded NATS JetStream server, a worker (with
    the outbox relay) and the framework's development web server, in one process.

    ADDRPORT is the web server's address, as runserver takes it (8000, 127.0.0.1:8000); --host
    and --port say the same. Ctrl-C stops everything."""
    setup_logging(loglevel, log_format)
    host = current_host()
    if host.takes_app_option and not host.app_spec and not nats_only:
        raise click.UsageError(
            f"{host.name} dev needs -A/--app MODULE[:APP] (or --nats-only to run only NATS)"
        )
    if host.web is None and (addrport or web_host or web_port is not None):
        raise click.UsageError(
            f"{host.name} dev runs no web server, so ADDRPORT, --host and --port have nothing "
            "to serve; the NATS server's port is --nats-port"
        )
    address, port = _addrport(addrport)
    run_options = DevOptions(
        data_dir=data_dir,
        nats_port=nats_port,
        nats_only=nats_only,
        relay=not no_relay,
        web_host=web_host or address or "127.0.0.1",
        web_port=web_port if web_port is not None else port,
        worker=worker_kwargs(options),
        services=not no_dashboard,
    )
    try:
        run_dev(host, run_options)
    except DFError as exc:
        raise click.ClickException(str(exc)) from exc


# -- workflow and dlq ------------------------------------------------------------------------


class _ErrorsAsClick(click.Group):
    """A group whose commands' DFErrors end as one line (click's ``Error: ...``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DFError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_ErrorsAsClick, context_settings=CONTEXT)
@app_option(hidden=True)
def workflow() -> None:
    """Inspect and control workflows: list, show, result, signal, cancel, replay."""


@workflow.command("list", context_settings=CONTEXT)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@app_option(hidden=True)
def workflow_list(limit: int) -> None:
    """List recent workflows with their status."""
    host = current_host()
    rows = host.app().list_workflows(limit=limit)
    host.echo(f"{'WORKFLOW ID':40}  {'STATUS':10}  LAST EVENT")
    for row in rows:
        when = row.last_event_time.isoformat(timespec="seconds") if row.last_event_time else ""
        host.echo(f"{row.workflow_id:40}  {row.status:10}  {when}")


@workflow.command("show", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the history as stored, for 'workflow replay' and scripts.",
)
@click.option(
    "--run",
    type=click.IntRange(min=1),
    default=None,
    help="Show this earlier run of a workflow that continued as new (default: the current).",
)
@app_option(hidden=True)
def workflow_show(workflow_id: str, as_json: bool, run: int | None) -> None:
    """Print a workflow's status and event history."""
    host = current_host()
    handle = host.app().get_handle(workflow_id)
    if as_json:
        host.echo(orjson.dumps(handle.export(run), option=orjson.OPT_INDENT_2).decode())
        return
    status = handle.status()
    of_run = f", run {status.run}" if status.run and status.run > 1 else ""
    host.echo(f"Workflow {workflow_id} ({status.workflow_type}{of_run}): {status.status}")
    if status.failure:
        host.echo(f"  failing: {status.failure}")
    if run is not None and run != status.run:
        host.echo(f"Run {run}:")
    host.echo(render_history(handle.history(run)))


@workflow.command("result", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.option("--timeout", type=float, metavar="SECONDS", help="How long to wait.")
@app_option(hidden=True)
def workflow_result(workflow_id: str, timeout: float | None) -> None:
    """Wait for a workflow's result and print it as JSON."""
    host = current_host()
    result = host.app().get_handle(workflow_id).result(timeout=timeout)
    host.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


@workflow.command("replay", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@app_option(hidden=True)
def workflow_replay(files: tuple[str, ...]) -> None:
    """Replay exported histories against the code: fails if any no longer replays.

    Export each with 'workflow show ID --json > FILE' before a change; run this in CI after.
    """
    from dfcore.testing import replay  # the testing kit, loaded only for this command

    host = current_host()
    app = host.app()
    failed = 0
    for name in files:
        try:
            replay(app, name)
        except DFError as exc:
            failed += 1
            host.echo(f"{name}: FAILED: {exc}")
        else:
            host.echo(f"{name}: replays")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} histories do not replay")


@workflow.command("signal", context_settings=CONTEXT)
@click.argument("workflow_id")
@click.argument("name")
@click.argument("payload", required=False)
@app_option(hidden=True)
def workflow_signal(workflow_id: str, name: str, payload: str | None) -> None:
    """Send signal NAME, with an optional JSON PAYLOAD, to a workflow."""
    try:
        value = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from exc
    host = current_host()
    host.app().get_handle(workflow_id).signal(name, value)
    host.echo(f"signal {name!r} sent to {workflow_id}")


@workflow.command("cancel", context_settings=CONTEXT)
@click.argument("workflow_id")
@app_option(hidden=True)
def workflow_cancel(workflow_id: str) -> None:
    """Request cancellation of a workflow."""
    host = current_host()
    host.app().get_handle(workflow_id).cancel()
    host.echo(f"cancellation requested for {workflow_id}")


@click.group(cls=_ErrorsAsClick, context_settings=CONTEXT)
@app_option(hidden=True)
def dlq() -> None:
    """Inspect messages workers could not use (dead letters): list, show."""


@dlq.command("list", context_settings=CONTEXT)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@app_option(hidden=True)
def dlq_list(limit: int) -> None:
    """List the newest dead letters with their reasons."""
    host = current_host()
    letters = host.app().dead_letters(limit=limit)
    host.echo(render_dead_letters(letters))
    if not letters:
        host.echo("(no dead letters)")


@dlq.command("show", context_settings=CONTEXT)
@click.argument("seq", type=int)
@app_option(hidden=True)
def dlq_show(seq: int) -> None:
    """Print one dead letter (SEQ as `dlq list` shows it): reason, origin, headers, body."""
    host = current_host()
    host.echo(render_dead_letter(host.app().dead_letter(seq)))


@click.group(cls=_ErrorsAsClick, context_settings=CONTEXT)
@app_option(hidden=True)
def schedule() -> None:
    """Inspect and control schedules: list, show, pause, resume, trigger, delete."""


@schedule.command("list", context_settings=CONTEXT)
@app_option(hidden=True)
def schedule_list() -> None:
    """List every schedule: when it fires next and what it started last."""
    host = current_host()
    schedules = host.app().schedules.list()
    for item in schedules:
        when = "paused" if item.paused else _when(item.next_time)
        host.echo(f"{item.schedule_id:24}  {item.spec.describe():40}  next {when}")
    if not schedules:
        host.echo("(no schedules)")


@schedule.command("show", context_settings=CONTEXT)
@click.argument("schedule_id")
@app_option(hidden=True)
def schedule_show(schedule_id: str) -> None:
    """Print one schedule: its spec, policies, next time and last workflow."""
    host = current_host()
    item = host.app().schedules.get(schedule_id)
    spec = item.spec
    lines = [
        f"Schedule {item.schedule_id}: {spec.describe()}{' (paused)' if item.paused else ''}",
        f"  workflow:  {spec.workflow}({', '.join(map(repr, spec.args))}) on {spec.task_queue}",
        f"  policies:  overlap={spec.overlap} catch_up={spec.catch_up}",
        f"  next:      {_when(item.next_time)}",
        f"  last:      {item.last_workflow_id or '-'}",
    ]
    if item.buffered_time is not None:
        lines.append(f"  buffered:  {_when(item.buffered_time)}")
    if item.note:
        lines.append(f"  note:      {item.note}")
    host.echo("\n".join(lines))


@schedule.command("pause", context_settings=CONTEXT)
@click.argument("schedule_id")
@click.option("--note", default="", help="Why, for whoever looks at it next.")
@app_option(hidden=True)
def schedule_pause(schedule_id: str, note: str) -> None:
    """Stop a schedule starting workflows until it is resumed."""
    current_host().app().schedules.pause(schedule_id, note)
    current_host().echo(f"schedule {schedule_id} paused")


@schedule.command("resume", context_settings=CONTEXT)
@click.argument("schedule_id")
@app_option(hidden=True)
def schedule_resume(schedule_id: str) -> None:
    """Resume a paused schedule from its next time."""
    item = current_host().app().schedules.resume(schedule_id)
    current_host().echo(f"schedule {schedule_id} resumed; next {_when(item.next_time)}")


@schedule.command("trigger", context_settings=CONTEXT)
@click.argument("schedule_id")
@app_option(hidden=True)
def schedule_trigger(schedule_id: str) -> None:
    """Start a schedule's workflow now, once."""
    handle = current_host().app().schedules.trigger(schedule_id)
    current_host().echo(f"started {handle.workflow_id}")


@schedule.command("delete", context_settings=CONTEXT)
@click.argument("schedule_id")
@app_option(hidden=True)
def schedule_delete(schedule_id: str) -> None:
    """Delete a schedule (the workflows it started run on). A schedule declared in the code
    or settings comes back when a worker starts: remove it there first."""
    current_host().app().schedules.delete(schedule_id)
    current_host().echo(f"schedule {schedule_id} deleted")


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


#: The commands every host has; the Flask and Django groups add these same objects. Installed
#: extras add theirs (``dashboard``), found by entry point (``_plugins``).
COMMANDS: tuple[click.Command, ...] = (worker, dev, workflow, schedule, dlq, *commands())


# -- the core CLI ----------------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.option(
    "--data-dir",
    default=".df/demo",
    show_default=True,
    help="Where the server keeps its data.",
)
def demo(data_dir: str) -> None:
    """Run the order demo: an embedded server, a worker, one workflow with a retry."""
    from dfcore.cli._demo import main as demo_main

    raise SystemExit(demo_main(data_dir))


@click.group(context_settings=CONTEXT)
@app_option(hidden=False)
@click.version_option(package_name="durablefuture", prog_name="dfcore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """DurableFuture: run workers and the development server, inspect workflows.

    Name your App with -A before the command, as Celery's -A: dfcore -A proj.tasks:app worker
    """
    if ctx.find_object(Host) is None:
        ctx.obj = _core_host()


def _core_host() -> Host:
    host = Host(name="dfcore", get_app=lambda: load_app(host.app_spec), takes_app_option=True)
    return host


for _command in (*COMMANDS, demo):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the core CLI (``dfcore``, ``python -m dfcore``); returns the exit status."""
    try:
        cli.main(args=argv, prog_name="dfcore", obj=_core_host(), standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
