"""DFTaskBackend: Django 6's tasks framework on a real server and a real worker."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured

from dfcore import App, WorkflowFailureError
from tests.django.conftest import django_process
from tests.workerkit import WorkerThread, wait_until

HAS_TASKS = django.VERSION >= (6, 0)
BACKEND = "dfcore.integrations.django.tasks.DFTaskBackend"

if HAS_TASKS:
    from django.db import transaction
    from django.tasks import TaskResult, TaskResultStatus, default_task_backend, task, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.utils import timezone

    from dfcore.integrations.django.models import OutboxEntry
    from dfcore.integrations.django.tasks import DFTaskBackend
    from tests.djangoapp import tasks as jobs


def test_an_older_django_is_told_it_needs_6(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setattr(django, "VERSION", (5, 2, 0, "final", 0))
    # A private copy of the module, imported as on Django 5.2 (the real one stays as it is).
    spec = importlib.util.find_spec("dfcore.integrations.django.tasks")
    assert spec is not None and spec.origin is not None
    copy_spec = importlib.util.spec_from_file_location(
        "dfcore.integrations.django.tasks_on_old_django", spec.origin
    )
    assert copy_spec is not None and copy_spec.loader is not None
    module = importlib.util.module_from_spec(copy_spec)
    copy_spec.loader.exec_module(module)  # importing works: Celery imports every tasks.py

    needs_6 = r"TASKS\[\"default\"\] uses .*DFTaskBackend, which needs Django 6\.0 or later"
    with pytest.raises(ImproperlyConfigured, match=needs_6 + r".*runs Django 5\.2"):
        module.DFTaskBackend("default", {})
    settings.TASKS = {"default": {"BACKEND": BACKEND}}
    with pytest.raises(ImproperlyConfigured, match=needs_6):
        module.register_configured_backends()


# -- fixtures ---------------------------------------------------------------------------------


def use_backend(settings: Any, queues: list[str] | None = None, **options: Any) -> DFTaskBackend:
    """Make DFTaskBackend the default task backend, with OPTIONS ``options``."""
    conf: dict[str, Any] = {
        "BACKEND": BACKEND,
        # Short waits between attempts keep retry tests fast; nothing depends on their length.
        "OPTIONS": {"RETRY_INTERVAL": 0.05, **options},
    }
    if queues is not None:
        conf["QUEUES"] = queues
    settings.TASKS = {"default": conf}
    backend = task_backends["default"]
    assert isinstance(backend, DFTaskBackend)
    return backend


@pytest.fixture
def backend(settings: Any, project_app: App) -> DFTaskBackend:
    if not HAS_TASKS:
        pytest.skip("django.tasks needs Django 6.0+")
    return use_backend(settings)


def finished(app: App, result: TaskResult) -> TaskResult:
    """Wait for the task's workflow to end, then refresh ``result`` (Django's API) and return it."""
    with contextlib.suppress(WorkflowFailureError):
        app.get_handle(result.id).result(timeout=60)
    result.refresh()
    return result


# -- enqueue, run, get_result -----------------------------------------------------------------


def test_a_task_runs_on_a_worker_and_its_result_is_read_back(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="django.tasks")
    result = jobs.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.task == jobs.add and result.backend == "default"
    assert result.args == [2, 3] and result.kwargs == {}
    assert result.enqueued_at is not None and result.started_at is None

    finished(project_app, result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.is_finished and result.return_value == 5
    assert result.errors == [] and result.attempts == 1 and len(result.worker_ids) == 1
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at

    again = jobs.add.get_result(result.id)  # from anywhere: it is read from the history
    assert again == result
    assert project_app.get_handle(result.id).status().workflow_type == "dfcore.django_task"

    # Django's signals fire where things happen: enqueued here, started/finished on the worker.
    logged = [r.getMessage() for r in caplog.records if result.id in r.getMessage()]
    assert any("enqueued" in line for line in logged)
    assert any("state=RUNNING" in line for line in logged)
    assert any("state=SUCCESSFUL" in line for line in logged)


def test_arguments_make_a_json_round_trip(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    result = finished(project_app, jobs.echo.enqueue(1, (2, 3), flag=True, nested={"k": [None]}))
    assert result.args == [1, [2, 3]]
    assert result.return_value == {
        "args": [1, [2, 3]],
        "kwargs": {"flag": True, "nested": {"k": [None]}},
    }


def test_an_argument_json_cannot_hold_is_refused_before_anything_is_sent(
    backend: DFTaskBackend, project_app: App
) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        jobs.echo.enqueue(datetime.now())
    assert project_app.list_workflows() == []


def test_a_running_task_is_running(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    jobs.RELEASE.clear()
    try:
        result = jobs.blocking.enqueue()
        running = wait_until(
            lambda: (
                (r := default_task_backend.get_result(result.id)).status == TaskResultStatus.RUNNING
                and r
            ),
            what="the task to start",
        )
        assert running.started_at is not None and running.finished_at is None
        assert running.attempts == 1 and not running.is_finished
        with pytest.raises(ValueError, match="Task has not finished yet"):
            _ = running.return_value
    finally:
        jobs.RELEASE.set()
    assert finished(project_app, result).return_value == "released"


# -- retries and failures ---------------------------------------------------------------------


def test_a_failed_attempt_is_retried_durably(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App, tmp_path: Path
) -> None:
    result = finished(project_app, jobs.flaky.enqueue(str(tmp_path / "attempted")))
    assert result.status == TaskResultStatus.SUCCESSFUL
    # The task saw its second attempt through TaskContext.
    assert result.return_value == {"attempt": 2, "id": result.id}
    assert result.attempts == 2
    [error] = result.errors
    assert error.exception_class is RuntimeError
    assert error.traceback.endswith("RuntimeError: first attempt fails\n")
    assert "Traceback (most recent call last)" in error.traceback
    # The retry waited on a durable timer, recorded in the history.
    events = [e.type for e in project_app.get_handle(result.id).history()]
    assert events.count("ActivityFailed") == 1 and "TimerStarted" in events


def test_a_task_that_always_fails_ends_failed_with_every_error(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App, caplog: Any
) -> None:
    result = finished(project_app, jobs.always_fails.enqueue())
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert result.attempts == 3  # MAX_ATTEMPTS defaults to 3
    assert [e.exception_class for e in result.errors] == [ValueError] * 3
    assert all(e.traceback.endswith("ValueError: this task always fails\n") for e in result.errors)
    # The worker logged the last attempt's failure (Django's task_finished) with its traceback.
    failed = [r for r in caplog.records if "state=FAILED" in r.getMessage()]
    assert failed and failed[-1].levelno == logging.ERROR and failed[-1].exc_info


def test_max_attempts_and_non_retryable_errors(
    settings: Any, backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    use_backend(settings, MAX_ATTEMPTS=2, NON_RETRYABLE=[KeyError])
    assert finished(project_app, jobs.always_fails.enqueue()).attempts == 2
    result = finished(project_app, jobs.bad_input.enqueue())
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert result.errors[0].exception_class is KeyError


def test_a_return_value_json_cannot_hold_fails_at_once(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    result = finished(project_app, jobs.unstorable.enqueue())
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_a_cancelled_task_is_failed(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    result = jobs.add.using(run_after=timedelta(hours=1)).enqueue(1, 1)
    handle = project_app.get_handle(result.id)
    wait_until(lambda: "TimerStarted" in [e.type for e in handle.history()], what="the timer")
    handle.cancel("no longer needed")
    result = finished(project_app, result)
    assert result.status == TaskResultStatus.FAILED and result.attempts == 0
    [error] = result.errors
    assert error.exception_class.__name__ == "CancelledError"
    assert "no longer needed" in error.traceback


# -- get_result -------------------------------------------------------------------------------


async def test_async_enqueue_and_get_result(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    result = await jobs.add_async.aenqueue(4, 5)
    assert result.status == TaskResultStatus.READY
    await project_app.get_handle(result.id).aresult(timeout=60)
    await result.arefresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 9
    got = await jobs.add_async.aget_result(result.id)
    assert got == result
    with pytest.raises(TaskResultDoesNotExist):
        await default_task_backend.aget_result("no-such-task")


def test_unknown_ids_do_not_exist(backend: DFTaskBackend, project_app: App) -> None:
    for unknown in ("no-such-task", "x" * 300, 123):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(unknown)
    with pytest.raises(TaskResultDoesNotExist):
        jobs.add.get_result("no-such-task")
    # A workflow that is not a Django task is not a task result either.
    project_app.start("greeting", "ada", workflow_id="not-a-task")
    with pytest.raises(TaskResultDoesNotExist, match="not a Django task"):
        default_task_backend.get_result("not-a-task")


def test_a_result_of_another_task_is_a_mismatch(backend: DFTaskBackend) -> None:
    result = jobs.echo.enqueue()
    with pytest.raises(TaskResultMismatch, match="Task does not match"):
        jobs.add.get_result(result.id)
    assert default_task_backend.get_result(result.id).task == jobs.echo


# -- run_after --------------------------------------------------------------------------------


def test_a_deferred_task_waits_on_a_durable_timer(
    backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    later = timezone.now() + timedelta(hours=1)
    waiting = jobs.add.using(run_after=later).enqueue(1, 2)
    assert waiting.task.run_after == later
    handle = project_app.get_handle(waiting.id)
    timers = wait_until(
        lambda: [e for e in handle.history() if e.type == "TimerStarted"], what="the timer"
    )
    assert timers[0].attributes["duration"] > 3500
    waiting.refresh()
    assert waiting.status == TaskResultStatus.READY and waiting.started_at is None
    assert default_task_backend.get_result(waiting.id).task.run_after == later

    # A timedelta is from now (Django documents both); the task runs once it has passed.
    soon = jobs.add.using(run_after=timedelta(milliseconds=300)).enqueue(2, 2)
    assert isinstance(soon.task.run_after, datetime)
    result = finished(project_app, soon)
    assert result.return_value == 4
    assert result.started_at >= soon.task.run_after


# -- validation, queues, options --------------------------------------------------------------


def test_validate_task_rejects_what_django_and_the_engine_cannot_run(
    settings: Any, backend: DFTaskBackend
) -> None:
    assert backend.supports_defer and backend.supports_async_task and backend.supports_get_result
    assert not backend.supports_priority
    with pytest.raises(
        InvalidTask, match=re.escape("Backend does not support setting priority of tasks.")
    ):
        jobs.add.using(priority=10)
    with pytest.raises(InvalidTask, match=re.escape("run_after must be an aware datetime.")):
        jobs.add.using(run_after=datetime.now())
    with pytest.raises(InvalidTask, match=re.escape("Queue 'emails' is not valid for backend.")):
        jobs.add.using(queue_name="emails")
    with pytest.raises(
        InvalidTask, match=re.escape("Task function must be defined at a module level.")
    ):

        @task
        def local() -> None: ...

    with pytest.raises(InvalidTask, match="Task takes context but does not have a first argument"):
        task(takes_context=True)(jobs.add.func)

    use_backend(settings, queues=[])  # Django's "any queue": still one the engine can use
    assert jobs.add.using(queue_name="emails").queue_name == "emails"
    with pytest.raises(InvalidTask, match="Queue 'bad queue' cannot be used with DFTaskBackend"):
        jobs.add.using(queue_name="bad queue")


def test_queues_map_to_task_queues(
    settings: Any, dfcore_settings: dict[str, Any], backend: DFTaskBackend, project_app: App
) -> None:
    settings.DFCORE = {**dfcore_settings, "TASK_QUEUE": "web"}
    use_backend(settings, queues=["default", "emails"])
    default = jobs.add.enqueue(1, 1)
    emails = jobs.add.using(queue_name="emails").enqueue(2, 2)

    def queue_of(result: TaskResult) -> str:
        return str(project_app.get_handle(result.id).history()[0].attributes["task_queue"])

    assert queue_of(default) == "web"  # Django's "default" is the project's TASK_QUEUE
    assert queue_of(emails) == "emails"
    with WorkerThread(project_app, task_queues=["web", "emails"]):
        assert finished(project_app, default).return_value == 2
        assert finished(project_app, emails).return_value == 4


def test_bad_options_and_queues_are_reported(settings: Any, backend: DFTaskBackend) -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"\"MAX_ATTEMPT\"\].*did you mean 'MAX_ATTEMPTS'"
    ):
        use_backend(settings, MAX_ATTEMPT=3)
    with pytest.raises(ImproperlyConfigured, match=r"MAX_ATTEMPTS.*expected a whole number"):
        use_backend(settings, MAX_ATTEMPTS=-1)
    with pytest.raises(ImproperlyConfigured, match=r"NON_RETRYABLE.*not an exception class"):
        use_backend(settings, NON_RETRYABLE=["no such thing"])
    bad = use_backend(settings, queues=["default", "bad queue"])
    [error] = bad.check()
    assert error.id == "dfcore.E101" and "'bad queue'" in error.msg


# -- enqueue on commit ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_goes_through_the_outbox(
    settings: Any, backend: DFTaskBackend, worker: WorkerThread, project_app: App
) -> None:
    use_backend(settings, ENQUEUE_ON_COMMIT=True)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        dropped = jobs.add.enqueue(0, 0)
        raise Abort
    with transaction.atomic():
        result = jobs.add.enqueue(3, 4)
        with pytest.raises(TaskResultDoesNotExist):  # nothing is sent before the commit
            default_task_backend.get_result(result.id)
        assert OutboxEntry.objects.get().workflow_id == result.id
    assert finished(project_app, result).return_value == 7
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(dropped.id)


# -- a real worker process --------------------------------------------------------------------

_WORKER = """
from django.conf import settings
settings.TASKS = {{"default": {{"BACKEND": {backend!r}}}}}
settings.DFCORE = {dfcore!r}
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "df_worker", "--no-relay"])
"""


def run_worker_process(
    nats_url: str, namespace: str, dfcore: dict[str, Any]
) -> subprocess.Popen[bytes]:
    """``manage.py df_worker`` in its own process, with TASKS naming DFTaskBackend."""
    script = _WORKER.format(backend=BACKEND, dfcore=dfcore)
    return django_process(
        "-c", script, output=subprocess.DEVNULL, DF_NATS_URL=nats_url, DF_NAMESPACE=namespace
    )


@pytest.mark.parametrize(
    "dfcore",
    [
        # The project's workers import its tasks modules: defining a task creates the backend.
        pytest.param({"AUTODISCOVER": ["workflows", "activities", "tasks"]}, id="autodiscover"),
        # A worker that imports no task module: the dfcore AppConfig registers the backend.
        pytest.param({}, id="plain"),
    ],
)
def test_df_worker_runs_tasks(
    dfcore: dict[str, Any], backend: DFTaskBackend, nats_url: str, namespace: str, project_app: App
) -> None:
    proc = run_worker_process(nats_url, namespace, dfcore)
    try:
        result = finished(project_app, jobs.add.enqueue(20, 22))
    finally:
        proc.terminate()
        proc.wait(30)
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == 42
