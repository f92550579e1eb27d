"""manage.py df_worker / df_relay / df_workflow / df_dlq: the core CLI's options, the App."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from dfcore import App, DFConnectionError, WorkflowNotFoundError
from dfcore.integrations.django import start_on_commit
from dfcore.integrations.django.models import OutboxEntry
from dfcore.jetstream._server import free_port
from tests.django.conftest import django_process, manage_py, on_all_databases
from tests.djangoapp.workflows import greeting
from tests.workerkit import WorkerThread, visible_options, wait_until


def help_of(*words: str) -> str:
    proc = django_process(*manage_py(*words, "--help"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out.decode()


def test_manage_py_df_runs_the_core_commands_with_their_own_help() -> None:
    from dfcore import cli
    from dfcore.integrations.django.cli import df_group

    assert all(df_group.commands[command.name] is command for command in cli.COMMANDS)
    listed = help_of("df")
    assert re.match(r"Usage: manage.py df \[OPTIONS\] COMMAND", listed), listed
    for name in ("worker", "dev", "relay", "workflow", "schedule", "dlq", "dashboard"):
        assert re.search(rf"^  {name} ", listed, re.M), listed
    assert "Usage: manage.py df_dashboard [OPTIONS]" in help_of("df_dashboard")
    worker = df_group.commands["worker"]
    for words in (("df", "worker"), ("df_worker",)):  # the alias runs the same command
        shown = help_of(*words)
        assert "Usage: manage.py " + " ".join(words) + " [OPTIONS]" in shown
        assert visible_options(worker) <= set(re.findall(r"(--?[A-Za-z][a-z-]*)", shown))


def test_df_and_its_aliases_take_the_same_arguments(worker: WorkerThread) -> None:
    greeting.start("gus", workflow_id="greet-gus").result(timeout=30)
    via_df, via_alias = io.StringIO(), io.StringIO()
    call_command("df", "workflow", "show", "greet-gus", stdout=via_df)
    call_command("df_workflow", "show", "greet-gus", stdout=via_alias)
    assert "greet-gus (greeting): completed" in via_df.getvalue()
    assert via_df.getvalue() == via_alias.getvalue()
    with pytest.raises(CommandError, match=r"No such option '--no-such'.*--help"):
        call_command("df_workflow", "list", "--no-such")


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("df_workflow", *args, stdout=out)
    return out.getvalue()


def test_df_workflow_mirrors_the_cli(worker: WorkerThread) -> None:
    handle = greeting.start("eve", workflow_id="greet-eve")
    assert handle.result(timeout=30) == "hello eve"
    assert "greet-eve" in run("list")
    shown = run("show", "greet-eve")
    assert "greet-eve (greeting): completed" in shown
    assert "ActivityCompleted" in shown
    assert run("result", "greet-eve").strip() == '"hello eve"'


def test_df_workflow_errors_become_command_errors() -> None:
    with pytest.raises(CommandError, match="no-such-workflow"):
        run("show", "no-such-workflow")


def test_df_dlq_lists_and_shows_dead_letters(worker: WorkerThread, project_app: App) -> None:
    import asyncio

    import nats

    async def publish_garbage() -> None:
        nc = await nats.connect(project_app.settings.nats_url)
        await nc.jetstream().publish(f"{project_app.settings.namespace}.task.default", b"?!")
        await nc.close()

    asyncio.run(publish_garbage())
    out = io.StringIO()
    letter = wait_until(lambda: project_app.dead_letters(), what="the dead letter")[0]
    call_command("df_dlq", "list", stdout=out)
    assert "malformed activity task" in out.getvalue()
    call_command("df_dlq", "show", str(letter.seq), stdout=out)
    assert f"Dead letter {letter.seq}" in out.getvalue()
    with pytest.raises(CommandError, match="no dead letter 99999"):
        call_command("df_dlq", "show", "99999", stdout=out)


def test_df_schedule_lists_shows_and_pauses_schedules(project_app: App) -> None:
    project_app.schedules.create("nightly", "greet", cron="0 3 * * *", args=["night"])
    out = io.StringIO()
    call_command("df_schedule", "list", stdout=out)
    assert "nightly" in out.getvalue() and "cron '0 3 * * *' in UTC" in out.getvalue()
    call_command("df", "schedule", "pause", "nightly", stdout=out)
    assert project_app.schedules.get("nightly").paused
    with pytest.raises(CommandError, match="there is no schedule 'nope'"):
        call_command("df_schedule", "show", "nope", stdout=out)
    project_app.schedules.delete("nightly")


@on_all_databases
def test_df_relay_once_publishes_pending_rows(
    db_alias: str, dfcore_settings: dict, settings, project_app: App
) -> None:
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}
    with transaction.atomic(using=db_alias):
        start_on_commit(greeting, "fay", workflow_id="greet-fay", using=db_alias)
    out = io.StringIO()
    call_command("df_relay", "--once", "--database", db_alias, stdout=out)
    assert "published 1 workflow start" in out.getvalue()
    assert OutboxEntry.objects.using(db_alias).get().status == "published"
    with WorkerThread(project_app):
        assert project_app.get_handle("greet-fay").result(timeout=30) == "hello fay"


def test_df_worker_without_a_server_ends_with_one_line_of_django_advice(
    tmp_path: Path,
) -> None:
    """No server: a CommandError that names the project's own commands and settings."""
    log = tmp_path / "df_worker.log"
    proc = django_process(
        *manage_py("df_worker"), output=log, DF_NATS_URL=f"nats://127.0.0.1:{free_port()}"
    )
    assert proc.wait(60) != 0
    output = log.read_text()
    assert "CommandError: could not connect to NATS" in output
    assert "`python manage.py df_dev`" in output and 'DFCORE["NATS_URL"]' in output
    assert "dfcore -A" not in output and "App(nats_url" not in output
    assert "Traceback" not in output


def test_client_errors_in_a_django_process_speak_django(
    settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    settings.DFCORE = {**dfcore_settings, "NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    with pytest.raises(DFConnectionError, match=r'DFCORE\["NATS_URL"\]'):
        greeting.get_handle("greet-nobody").status()


def test_a_missing_workflow_names_the_django_namespace_setting() -> None:
    with pytest.raises(WorkflowNotFoundError, match=r'same DFCORE\["NAMESPACE"\]'):
        greeting.get_handle("greet-nobody").status()


@on_all_databases
def test_a_system_check_warns_when_the_outbox_table_is_missing() -> None:
    from django.core import checks
    from django.db import connection

    assert not [m for m in checks.run_checks() if m.id == "dfcore.W001"]
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE dfcore_outbox RENAME TO dfcore_outbox_away")
    try:
        [warning] = [m for m in checks.run_checks() if m.id == "dfcore.W001"]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE dfcore_outbox_away RENAME TO dfcore_outbox")
    assert "database 'default' has no dfcore_outbox table" in warning.msg
    assert warning.hint == "run `python manage.py migrate dfcore`"


def test_django_global_options_follow_an_action() -> None:
    out = io.StringIO()
    call_command("df_workflow", "list", "--traceback", "-v", "2", stdout=out)
    assert "WORKFLOW ID" in out.getvalue()
