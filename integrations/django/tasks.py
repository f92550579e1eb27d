"""A backend for Django's tasks framework (``django.tasks``, Django 6.0+) on DurableFuture.

Configure it in ``settings.py``::

    TASKS = {
        "default": {
            "BACKEND": "dfcore.integrations.django.tasks.DFTaskBackend",
            "QUEUES": ["default", "emails"],  # optional; [] accepts any queue name
            "OPTIONS": {"MAX_ATTEMPTS": 5},    # optional; see below
        }
    }

Then ``@task`` functions enqueued with ``.enqueue()`` / ``.aenqueue()`` run on the project's
workers (``manage.py df_worker``), each as one durable workflow: a failed attempt is retried
with backoff on durable timers, ``run_after`` is a durable timer, and the outcome is kept in
the workflow's history, so ``get_result()`` works from any process. The ``TaskResult`` id is
the workflow id: ``manage.py df_workflow`` and the admin show the same run.

Queues: the Django queue ``"default"`` runs on the project's default task queue
(``DFCORE["TASK_QUEUE"]``, which ``df_worker`` serves unless told otherwise); any other queue
name runs on the DurableFuture task queue of the same name, so serve it with
``manage.py df_worker --queues emails``. Queue names may only contain letters, digits, ``_``
and ``-``.

OPTIONS (all optional):

* ``MAX_ATTEMPTS`` (int, default 3): attempts of a task, the first included; 0 is unlimited.
* ``RETRY_INTERVAL`` (seconds, default 1.0): wait before the first retry.
* ``RETRY_BACKOFF`` (number >= 1, default 2.0): each retry waits this many times longer.
* ``MAX_RETRY_INTERVAL`` (seconds, default 100.0): upper bound of the wait between attempts.
* ``NON_RETRYABLE`` (list, default ``[]``): exception classes, or their import paths such as
  ``"myapp.errors.BadInput"``, that fail a task at once (subclasses included).
* ``TIMEOUT`` (seconds, default ``DFCORE["DEFAULT_ACTIVITY_TIMEOUT"]``): an attempt running
  longer is abandoned and retried.
* ``ENQUEUE_ON_COMMIT`` (bool, default False): enqueue through the transactional outbox
  (``start_on_commit``): inside ``transaction.atomic()`` the task is enqueued if and only if
  the transaction commits, and a crash after the commit loses nothing. Until the commit,
  ``get_result()`` raises ``TaskResultDoesNotExist``. Needs ``"dfcore.integrations.django"`` in
  ``INSTALLED_APPS`` with its migrations applied.

Feature flags: ``supports_defer``, ``supports_async_task`` and ``supports_get_result`` are
True. ``supports_priority`` is False: the engine has no priorities, so a task with a priority
other than 0 is rejected (``InvalidTask``) rather than silently run in arrival order.

Workers: the workflow and activity that run tasks (``dfcore.django_task`` and
``dfcore.django_task.run``) are registered on the project App at start-up: the dfcore app's
``ready()`` calls :func:`register_configured_backends`, so ``manage.py df_worker`` runs tasks
with no further set-up.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import logging
import os
import socket
import threading
import traceback
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

import dfcore
from dfcore import (
    ActivityError,
    App,
    ApplicationError,
    ConfigurationError,
    DFError,
    HistoryEvent,
    RetryPolicy,
    WorkflowContext,
    WorkflowNotFoundError,
    activity,
    check_task_queue,
)

from .runtime import get_app

#: Django 6.0 brought ``django.tasks``. Before it, this module still imports, because job
#: runners such as Celery import every installed app's ``tasks`` module; the backend refuses
#: to be created instead.
HAS_DJANGO_TASKS = django.VERSION >= (6, 0)

if HAS_DJANGO_TASKS:
    from django.tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    _Base: type = BaseTaskBackend
else:  # Django < 6.0: DFTaskBackend() raises ImproperlyConfigured
    _Base = object

log = logging.getLogger("dfcore.django.tasks")

#: The workflow that runs one enqueued task, and the activity that calls the task function.
WORKFLOW = "dfcore.django_task"
ACTIVITY = "dfcore.django_task.run"
#: The signal an attempt records when it starts: its time and worker (``started_at``, ``RUNNING``).
STARTED_SIGNAL = "dfcore.django_task.started"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TRACEBACK = 16_000  # characters kept of a traceback (its end): history entries stay small
_BACKEND_PATH = "dfcore.integrations.django.tasks.DFTaskBackend"  # what TASKS names

_OPTIONS: dict[str, Any] = {
    "MAX_ATTEMPTS": 3,
    "RETRY_INTERVAL": 1.0,
    "RETRY_BACKOFF": 2.0,
    "MAX_RETRY_INTERVAL": 100.0,
    "NON_RETRYABLE": (),
    "TIMEOUT": None,
    "ENQUEUE_ON_COMMIT": False,
}


class DFTaskBackend(_Base):  # type: ignore[misc]  # BaseTaskBackend is untyped
    """Runs Django tasks as DurableFuture workflows on the project's workers.

    See the module docstring for the settings. ``enqueue`` returns a ``TaskResult`` whose id
    is the workflow id; ``get_result`` reads the workflow's history, from any process.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        if not HAS_DJANGO_TASKS:
            raise ImproperlyConfigured(_needs_django_6(alias))
        super().__init__(alias, params)
        opts = _read_options(alias, self.options)
        self.retry: RetryPolicy = opts["retry"]
        self.non_retryable: tuple[str, ...] = opts["non_retryable"]
        self.timeout: float | None = opts["timeout"]
        self.enqueue_on_commit: bool = opts["enqueue_on_commit"]
        # Before the models are loaded, the App named by DFCORE["APP"] may not be importable
        # yet (a @task in a models module creates the backend that early); enqueue() and
        # register_configured_backends() register it later.
        if apps.models_ready:
            register_task_workflow()

    # -- validation -------------------------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        """Django's rules, plus a queue name DurableFuture can use.

        Raises:
            InvalidTask: the task cannot run on this backend; the message says why.
        """
        if isinstance(task.run_after, timedelta):
            # Django documents run_after as a datetime or a timedelta from now, but its base
            # check only takes datetimes: check the moment it stands for (enqueue records it).
            # replace() validates the new Task through its backend, which is this one.
            dataclasses.replace(task, run_after=timezone.now() + task.run_after)
            return
        super().validate_task(task)
        if not _is_queue_name(task.queue_name):
            raise InvalidTask(
                f"Queue {task.queue_name!r} cannot be used with DFTaskBackend: queue names may "
                "only contain letters, digits, '_' and '-' (at most 64 characters)."
            )

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        for name in sorted(self.queues):
            if not _is_queue_name(name):
                errors.append(
                    checks.Error(
                        f'settings.TASKS["{self.alias}"]["QUEUES"] has {name!r}, which '
                        "DurableFuture cannot use as a task queue.",
                        hint="Use only letters, digits, '_' and '-' (at most 64 characters).",
                        id="dfcore.E101",
                    )
                )
        if self.enqueue_on_commit and not apps.is_installed("dfcore.integrations.django"):
            errors.append(
                checks.Error(
                    f'settings.TASKS["{self.alias}"]["OPTIONS"]["ENQUEUE_ON_COMMIT"] needs the '
                    "transactional outbox of the dfcore app, which is not installed.",
                    hint='Add "dfcore.integrations.django" to INSTALLED_APPS and run migrate.',
                    id="dfcore.E102",
                )
            )
        return errors

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskResult:
        """Start the task's workflow (or, with ENQUEUE_ON_COMMIT, write it to the outbox).

        Raises:
            InvalidTask: the task cannot run on this backend.
            TypeError: an argument is not JSON-serialisable (Django's own check).
            dfcore.DFError: the start could not be sent (NATS unreachable, too large...).
        """
        result, spec, queue = self._prepare(task, args, kwargs)
        app = _project_app()
        if self.enqueue_on_commit:
            from .outbox import start_on_commit  # needs the ORM: import only when used

            start_on_commit(WORKFLOW, spec, workflow_id=result.id, task_queue=queue)
        else:
            app.start(WORKFLOW, spec, workflow_id=result.id, task_queue=queue)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(
        self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult:
        """The async twin of :meth:`enqueue` (the outbox path runs it in a thread)."""
        if self.enqueue_on_commit:  # the ORM and its transaction are thread-bound
            return await super().aenqueue(task, args, kwargs)
        result, spec, queue = self._prepare(task, args, kwargs)
        await _project_app().astart(WORKFLOW, spec, workflow_id=result.id, task_queue=queue)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _prepare(
        self, task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[TaskResult, dict[str, Any], str]:
        """Validate, and build the READY result, the workflow's argument and its queue."""
        if isinstance(task.run_after, timedelta):
            # Django documents run_after as a datetime or a timedelta from now; record the
            # moment, so the result (and a replay of the workflow) sees a fixed time.
            task = dataclasses.replace(task, run_after=timezone.now() + task.run_after)
        self.validate_task(task)
        enqueued = _from_us(_to_us(timezone.now()))  # the precision get_result() reads back
        result = TaskResult(  # normalises args/kwargs: non-JSON values raise TypeError here
            task=task,
            id=str(uuid.uuid4()),
            status=TaskResultStatus.READY,
            enqueued_at=enqueued,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        spec = {
            "task": task.module_path,
            "args": result.args,
            "kwargs": result.kwargs,
            "queue_name": task.queue_name,
            "priority": task.priority,
            "run_after": _to_us(task.run_after) if task.run_after is not None else None,
            "enqueued_at": _to_us(enqueued),
            "backend": self.alias,
            "retry": self.retry.to_json(),
            "non_retryable": list(self.non_retryable),
            "timeout": self.timeout,
        }
        return result, spec, self._queue(task.queue_name)

    def _queue(self, queue_name: str) -> str:
        if queue_name == DEFAULT_TASK_QUEUE_NAME:
            return _project_app().settings.task_queue
        return queue_name

    # -- results ----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as its workflow's history has it now.

        Raises:
            TaskResultDoesNotExist: no task was enqueued with this id (in this namespace), or
                its task function can no longer be imported here.
        """
        handle = _handle(result_id)
        try:
            events = handle.history()
        except (WorkflowNotFoundError, ConfigurationError):
            raise TaskResultDoesNotExist(result_id) from None
        return result_from_history(str(result_id), events, self.alias)

    async def aget_result(self, result_id: str) -> TaskResult:
        """The async twin of :meth:`get_result`."""
        handle = _handle(result_id)
        try:
            events = await handle.ahistory()
        except (WorkflowNotFoundError, ConfigurationError):
            raise TaskResultDoesNotExist(result_id) from None
        return result_from_history(str(result_id), events, self.alias)


# -- the workflow and the activity ------------------------------------------------------------

_registered: weakref.WeakSet[App] = weakref.WeakSet()
_registering = threading.Lock()


def register_task_workflow(app: App | None = None) -> App:
    """Register the workflow and activity that run Django tasks on ``app`` (idempotent).

    The backend calls it when it is created and before each enqueue. Every worker process
    needs them too; :func:`register_configured_backends` registers them at start-up.

    Args:
        app: the App; the project App (``get_app()``) by default.

    Returns:
        The App they are registered on.
    """
    app = app or get_app()
    with _registering:
        if app not in _registered:
            app.workflow(name=WORKFLOW)(_run_task_workflow)
            app.activity(name=ACTIVITY)(_make_activity(app))
            _registered.add(app)
    return app


def register_configured_backends() -> None:
    """Create every ``TASKS`` backend that is a DFTaskBackend, now (for ``AppConfig.ready``).

    Django creates task backends lazily, and a worker process may never import a module
    that defines a task before its first task arrives; creating the backends at start-up
    registers the workflow that runs tasks (and reports bad OPTIONS) in every process.

    Raises:
        ImproperlyConfigured: ``TASKS`` names DFTaskBackend on Django older than 6.0, or its
            OPTIONS are invalid.
    """
    configured = getattr(settings, "TASKS", None)
    if not isinstance(configured, Mapping):
        return
    ours = [
        alias
        for alias, conf in configured.items()
        if isinstance(conf, Mapping) and _is_this_backend(conf.get("BACKEND"))
    ]
    for alias in ours:
        if not HAS_DJANGO_TASKS:
            raise ImproperlyConfigured(_needs_django_6(alias))
        task_backends[alias]


def _is_this_backend(path: Any) -> bool:
    if path == _BACKEND_PATH:
        return True
    if not isinstance(path, str) or not path:
        return False
    try:
        found = import_string(path)
    except ImportError:
        return False  # Django reports it when the backend is used
    return isinstance(found, type) and issubclass(found, DFTaskBackend)


def _needs_django_6(alias: str) -> str:
    return (
        f'settings.TASKS["{alias}"] uses {_BACKEND_PATH}, which needs Django 6.0 or later (the '
        f"django.tasks framework); this project runs Django {django.get_version()}. Upgrade "
        "Django, or start work with @app.workflow and start_on_commit() instead of TASKS."
    )


def _project_app() -> App:
    return register_task_workflow()


async def _run_task_workflow(ctx: WorkflowContext, spec: Any) -> Any:
    """One task: wait until ``run_after`` on a durable timer, then run it with retries."""
    run_after = spec.get("run_after")
    if run_after is not None:
        # ctx.now() is the enqueue time recorded in the history, so a replay sleeps the same.
        # Rounded up to the millisecond the timer is kept in, so it never fires early.
        wait_ms = -(-(run_after - _to_us(ctx.now())) // 1000)
        if wait_ms > 0:
            await ctx.sleep(wait_ms / 1000 + 0.0005)  # +0.5 ms: float noise cannot round down
    return await ctx.activity(
        ACTIVITY, spec, retry=RetryPolicy.from_json(spec["retry"]), timeout=spec.get("timeout")
    )


def _make_activity(app: App) -> Any:
    def run_task(spec: Any) -> Any:
        """One attempt of a task, on a worker thread (database connections are managed)."""
        return _run_attempt(app, spec)

    return run_task


def _run_attempt(app: App, spec: Mapping[str, Any]) -> Any:
    info = activity.info()
    task = _import_task(spec["task"])  # an ImportError fails the attempt: retried, then shown
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    started = timezone.now()
    _record_start(app, info, worker_id, started)
    task_result = _running_result(app, info.workflow_id, task, spec, worker_id, started)
    _send(task_started, task_result)
    args, kwargs = spec["args"], spec["kwargs"]
    try:
        if task.takes_context:
            raw = task.call(TaskContext(task_result=task_result), *args, **kwargs)
        else:
            raw = task.call(*args, **kwargs)
    except (Exception, SystemExit) as exc:  # what Django's backends count as a failed task
        raise _attempt_failed(task_result, info, spec, exc, final=False) from exc
    try:
        value = normalize_json(raw)
    except (TypeError, ValueError) as exc:  # a return value Django cannot store: every time
        raise _attempt_failed(task_result, info, spec, exc, final=True) from exc
    _finish(task_result, TaskResultStatus.SUCCESSFUL, None, value)
    return value


def _attempt_failed(
    task_result: TaskResult,
    info: activity.ActivityInfo,
    spec: Mapping[str, Any],
    exc: BaseException,
    *,
    final: bool,
) -> ApplicationError:
    """Report a failed attempt to Django's signals and return the error that records it.

    Called inside the ``except`` block, so task_finished's receivers see the exception. The
    error keeps Django's view of it (class path, traceback) in its details for get_result().
    """
    non_retryable = final or _matches(exc, spec.get("non_retryable") or ())
    again = not non_retryable and RetryPolicy.from_json(spec["retry"]).allows(info.attempt)
    error = _task_error(exc)
    _finish(task_result, TaskResultStatus.READY if again else TaskResultStatus.FAILED, error)
    return ApplicationError(
        str(exc),
        {"exception_class_path": error.exception_class_path, "traceback": error.traceback},
        type=type(exc).__name__,
        non_retryable=non_retryable,
    )


def _import_task(path: str) -> Task:
    found = import_string(path)
    if not isinstance(found, Task):
        raise ImportError(
            f"{path!r} is a {type(found).__name__}, not a Django task; it was enqueued as one, "
            "so decorate it with @task again (or enqueue the task that replaced it)"
        )
    return found


def _record_start(app: App, info: activity.ActivityInfo, worker_id: str, at: datetime) -> None:
    """Append the attempt's start to the history (it gives RUNNING, started_at, worker_ids).

    Best effort: the task runs even if this fails, and only its bookkeeping is missing.
    """
    payload = {"attempt": info.attempt, "worker_id": worker_id, "at": _to_us(at)}
    try:
        app.get_handle(info.workflow_id).signal(
            STARTED_SIGNAL, payload, signal_id=f"started-{info.seq}-{info.attempt}"
        )
    except DFError as exc:
        log.warning(
            "task %s: could not record the start of attempt %s: %s",
            info.workflow_id,
            info.attempt,
            exc,
        )


def _running_result(
    app: App, workflow_id: str, task: Task, spec: Mapping[str, Any], worker_id: str, at: datetime
) -> TaskResult:
    """The attempt's TaskResult (for TaskContext and Django's signals), from the history."""
    alias = str(spec.get("backend") or "default")
    try:
        result = result_from_history(
            workflow_id, app.get_handle(workflow_id).history(), alias, task=task
        )
    except (DFError, TaskResultDoesNotExist) as exc:
        log.warning("task %s: could not read its history: %s", workflow_id, exc)
        result = TaskResult(
            task=task,
            id=workflow_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=_from_us(spec["enqueued_at"]),
            started_at=_from_us(_to_us(at)),
            last_attempted_at=_from_us(_to_us(at)),
            finished_at=None,
            args=spec["args"],
            kwargs=spec["kwargs"],
            backend=alias,
            errors=[],
            worker_ids=[],
        )
    if result.status != TaskResultStatus.RUNNING:  # the start could not be recorded
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        object.__setattr__(result, "started_at", result.started_at or _from_us(_to_us(at)))
        object.__setattr__(result, "last_attempted_at", _from_us(_to_us(at)))
        result.worker_ids.append(worker_id)
    return result


def _finish(
    result: TaskResult, status: TaskResultStatus, error: TaskError | None, value: Any = None
) -> None:
    """Send Django's task_finished for this attempt (READY: a retry follows)."""
    object.__setattr__(result, "status", status)
    if status != TaskResultStatus.READY:
        object.__setattr__(result, "finished_at", timezone.now())
    if error is not None:
        result.errors.append(error)
    else:
        object.__setattr__(result, "_return_value", value)
    _send(task_finished, result)


def _send(signal: Any, result: TaskResult) -> None:
    """Send one of Django's task signals; a receiver's bug must not change the outcome."""
    try:
        signal.send(DFTaskBackend, task_result=result)
    except Exception:
        log.exception("task %s: a receiver of a django.tasks signal failed", result.id)


def _task_error(exc: BaseException) -> TaskError:
    kind = type(exc)
    text = "".join(traceback.format_exception(exc))
    return TaskError(
        exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
        traceback=text[-_MAX_TRACEBACK:],
    )


def _matches(exc: BaseException, paths: Iterable[str]) -> bool:
    wanted = set(paths)
    return any(f"{c.__module__}.{c.__qualname__}" in wanted for c in type(exc).__mro__)


# -- reading a result back --------------------------------------------------------------------


def _handle(result_id: Any) -> Any:
    return get_app().get_handle(str(result_id))


def result_from_history(
    result_id: str, events: Sequence[HistoryEvent], alias: str, *, task: Task | None = None
) -> TaskResult:
    """Build the ``TaskResult`` of a task from its workflow's history.

    READY until an attempt starts (also while ``run_after`` has not come, and between
    attempts), RUNNING while one runs, then SUCCESSFUL or FAILED. ``errors`` has one entry per
    failed attempt; ``worker_ids`` one per attempt started.

    Raises:
        TaskResultDoesNotExist: the workflow does not run a Django task, or its task function
            cannot be imported here.
    """
    if not events or events[0].type != "WorkflowStarted":
        raise TaskResultDoesNotExist(result_id)
    first = events[0].attributes
    if first.get("workflow") != WORKFLOW or not first.get("args"):
        raise TaskResultDoesNotExist(
            f"{result_id!r} is a {first.get('workflow')!r} workflow, not a Django task"
        )
    spec = first["args"][0]
    task = _result_task(result_id, spec, alias, task)
    status = TaskResultStatus.READY
    started_at = last_attempted_at = finished_at = None
    worker_ids: list[str] = []
    errors: list[TaskError] = []
    running: set[int] = set()
    value: Any = None
    cancel_reason = ""
    for event in events:
        attrs = event.attributes
        if event.type == "SignalReceived" and attrs.get("name") == STARTED_SIGNAL:
            payload = attrs.get("payload") or {}
            at = _from_us(payload["at"]) if "at" in payload else _from_ms(event.time_ms)
            started_at = started_at or at
            last_attempted_at = at
            worker_ids.append(str(payload.get("worker_id", "")))
            running.add(int(payload.get("attempt", 0)))
        elif event.type in ("ActivityCompleted", "ActivityFailed"):
            running.discard(int(attrs.get("attempt", 0)))
            if event.type == "ActivityFailed":
                errors.append(_error_from_record(attrs.get("error") or {}))
        elif event.type == "WorkflowCompleted":
            status, finished_at, value = (
                TaskResultStatus.SUCCESSFUL,
                _from_ms(event.time_ms),
                attrs.get("result"),
            )
        elif event.type == "CancelRequested":
            cancel_reason = str(attrs.get("reason") or "")
        elif event.type in ("WorkflowFailed", "WorkflowTimedOut", "WorkflowCancelled"):
            status, finished_at = TaskResultStatus.FAILED, _from_ms(event.time_ms)
            error = attrs.get("error") or {}
            if event.type == "WorkflowCancelled":
                errors.append(_cancelled(cancel_reason))
            elif error.get("type") != ActivityError.__name__:  # attempts' errors are listed
                errors.append(_error_from_record(error))
    if status == TaskResultStatus.READY and running:
        status = TaskResultStatus.RUNNING
    if finished_at is not None and last_attempted_at is not None:
        # History times are whole milliseconds, attempts' starts microseconds: an end in the
        # same millisecond as the last start must not read as before it.
        finished_at = max(finished_at, last_attempted_at)
    result = TaskResult(
        task=task,
        id=result_id,
        status=status,
        enqueued_at=_from_us(spec["enqueued_at"]),
        started_at=started_at,
        last_attempted_at=last_attempted_at,
        finished_at=finished_at,
        args=spec["args"],
        kwargs=spec["kwargs"],
        backend=alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", value)
    return result


def _result_task(result_id: str, spec: Mapping[str, Any], alias: str, task: Task | None) -> Task:
    """The Task the result was enqueued for: the decorated function (``task``, if already
    imported), with its recorded queue, priority and run_after."""
    try:
        task = task or _import_task(spec["task"])
    except ImportError as exc:
        raise TaskResultDoesNotExist(
            f"{result_id!r} is a result of task {spec['task']!r}, which cannot be imported "
            f"here ({exc}); deploy the code that defines it to read the result"
        ) from exc
    recorded = {
        "queue_name": spec.get("queue_name", task.queue_name),
        "priority": spec.get("priority", task.priority),
        "run_after": _from_us(spec["run_after"]) if spec.get("run_after") is not None else None,
        "backend": alias,
    }
    changes = {k: v for k, v in recorded.items() if getattr(task, k) != v}
    if not changes:
        return task
    try:
        return dataclasses.replace(task, **changes)
    except (InvalidTask, ImproperlyConfigured):
        # Its queue was removed from QUEUES since, or this process has no backend of that
        # alias (InvalidTaskBackend): the result is still worth showing, with the plain task.
        return task


def _error_from_record(error: Mapping[str, Any]) -> TaskError:
    """A failed attempt's TaskError: as the task raised it, or as the engine recorded it
    (a timeout, a worker lost mid-attempt)."""
    for detail in error.get("details") or ():
        if isinstance(detail, Mapping) and "exception_class_path" in detail:
            return TaskError(
                exception_class_path=str(detail["exception_class_path"]),
                traceback=str(detail.get("traceback", "")),
            )
    name = str(error.get("type") or "Exception")
    message = str(error.get("message") or "")
    text = str(error.get("traceback") or f"{name}: {message}\n")
    return TaskError(exception_class_path=_exception_path(name), traceback=text)


def _cancelled(reason: str) -> TaskError:
    text = f"CancelledError: the task was cancelled{': ' + reason if reason else ''}\n"
    return TaskError(exception_class_path="dfcore.CancelledError", traceback=text)


def _exception_path(name: str) -> str:
    """An importable path for an exception type name the engine recorded."""
    for module, where in ((builtins, "builtins"), (dfcore, "dfcore")):
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return f"{where}.{name}"
    return "builtins.Exception"


# -- options, names and times -----------------------------------------------------------------


def _read_options(alias: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``OPTIONS``; ImproperlyConfigured names the key and what it expects."""

    def label(key: str) -> str:
        return f'settings.TASKS["{alias}"]["OPTIONS"]["{key}"]'

    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f'settings.TASKS["{alias}"]["OPTIONS"] must be a dict, not {type(options).__name__}'
        )
    for key in options:
        if key not in _OPTIONS:
            close = difflib.get_close_matches(str(key).upper(), list(_OPTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ImproperlyConfigured(
                f"{label(str(key))} is not a DFTaskBackend option{hint}; valid options are: "
                f"{', '.join(_OPTIONS)}"
            )
    own = {**_OPTIONS, **options}
    for key in ("MAX_ATTEMPTS",):
        if not isinstance(own[key], int) or isinstance(own[key], bool) or own[key] < 0:
            raise ImproperlyConfigured(
                f"{label(key)} is invalid: got {own[key]!r}; expected a whole number >= 0 "
                "(0 means unlimited attempts)"
            )
    for key in ("RETRY_INTERVAL", "RETRY_BACKOFF", "MAX_RETRY_INTERVAL", "TIMEOUT"):
        value = own[key]
        if value is None and key == "TIMEOUT":
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ImproperlyConfigured(
                f"{label(key)} is invalid: got {value!r}; expected a number of seconds >= 0"
            )
    if own["TIMEOUT"] == 0:
        raise ImproperlyConfigured(f"{label('TIMEOUT')} must be more than 0 seconds (or None)")
    if not isinstance(own["ENQUEUE_ON_COMMIT"], bool):
        raise ImproperlyConfigured(
            f"{label('ENQUEUE_ON_COMMIT')} is invalid: got {own['ENQUEUE_ON_COMMIT']!r}; "
            "expected True or False"
        )
    try:
        retry = RetryPolicy(
            max_attempts=own["MAX_ATTEMPTS"],
            initial_interval=float(own["RETRY_INTERVAL"]),
            backoff=float(own["RETRY_BACKOFF"]),
            max_interval=float(own["MAX_RETRY_INTERVAL"]),
        )
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f'settings.TASKS["{alias}"]["OPTIONS"]: {exc}') from exc
    return {
        "retry": retry,
        "non_retryable": _exception_paths(label("NON_RETRYABLE"), own["NON_RETRYABLE"]),
        "timeout": None if own["TIMEOUT"] is None else float(own["TIMEOUT"]),
        "enqueue_on_commit": own["ENQUEUE_ON_COMMIT"],
    }


def _exception_paths(label: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | type) or not isinstance(value, Iterable):
        raise ImproperlyConfigured(
            f"{label} is invalid: got {value!r}; expected a list of exception classes or import "
            'paths, such as ["myapp.errors.BadInput"]'
        )
    paths: list[str] = []
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            paths.append(f"{item.__module__}.{item.__qualname__}")
        elif isinstance(item, str) and "." in item.strip(".") and " " not in item:
            paths.append(item)
        elif isinstance(item, str) and _exception_path(item) != "builtins.Exception":
            paths.append(_exception_path(item))  # a bare built-in name such as "KeyError"
        elif item == "Exception":
            paths.append("builtins.Exception")
        else:
            raise ImproperlyConfigured(
                f"{label} is invalid: {item!r} is not an exception class or the import path of "
                'one (such as "myapp.errors.BadInput")'
            )
    return tuple(paths)


def _is_queue_name(name: Any) -> bool:
    try:
        check_task_queue(name)
    except ConfigurationError:
        return False
    return True


def _to_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is in the current time zone)."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    """The datetime Django uses for an epoch time: aware UTC, or naive local without USE_TZ."""
    value = _EPOCH + timedelta(microseconds=int(us))
    return value if settings.USE_TZ else timezone.make_naive(value)


def _from_ms(ms: int) -> datetime:
    return _from_us(int(ms) * 1000)


__all__ = [
    "ACTIVITY",
    "HAS_DJANGO_TASKS",
    "STARTED_SIGNAL",
    "WORKFLOW",
    "DFTaskBackend",
    "register_configured_backends",
    "register_task_workflow",
    "result_from_history",
]
