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

import dataclasses
import logging
import os
import socket
import threading
import traceback
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from dfcore import (
    App,
    ApplicationError,
    ConfigurationError,
    DFError,
    RetryPolicy,
    WorkflowContext,
    WorkflowNotFoundError,
    activity,
)

from ._task_options import (
    ACTIVITY,
    STARTED_SIGNAL,
    WORKFLOW,
    from_us,
    is_queue_name,
    read_options,
    to_us,
)
from ._task_results import import_task, result_from_history
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

_MAX_TRACEBACK = 16_000  # characters kept of a traceback (its end): history entries stay small
_BACKEND_PATH = "dfcore.integrations.django.tasks.DFTaskBackend"  # what TASKS names


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
        opts = read_options(alias, self.options)
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

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Django's rules, plus a queue name DurableFuture can use.

        Raises:
            InvalidTask: the task cannot run on this backend; the message says why.
        """
        run_after: Any = task.run_after  # the stubs allow a datetime only
        if isinstance(run_after, timedelta):
            # Django documents run_after as a datetime or a timedelta from now, but its base
            # check only takes datetimes: check the moment it stands for (enqueue records it).
            # replace() validates the new Task through its backend, which is this one.
            dataclasses.replace(task, run_after=timezone.now() + run_after)
            return
        super().validate_task(task)
        if not is_queue_name(task.queue_name):
            raise InvalidTask(
                f"Queue {task.queue_name!r} cannot be used with DFTaskBackend: queue names may "
                "only contain letters, digits, '_' and '-' (at most 64 characters)."
            )

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = []
        for name in sorted(self.queues):
            if not is_queue_name(name):
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

    def enqueue(
        self, task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[Any, Any]:
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
        self, task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[Any, Any]:
        """The async twin of :meth:`enqueue` (the outbox path runs it in a thread)."""
        if self.enqueue_on_commit:  # the ORM and its transaction are thread-bound
            result: TaskResult[Any, Any] = await super().aenqueue(task, args, kwargs)
            return result
        result, spec, queue = self._prepare(task, args, kwargs)
        await _project_app().astart(WORKFLOW, spec, workflow_id=result.id, task_queue=queue)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _prepare(
        self, task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[TaskResult[Any, Any], dict[str, Any], str]:
        """Validate, and build the READY result, the workflow's argument and its queue."""
        run_after: Any = task.run_after  # the stubs allow a datetime only
        if isinstance(run_after, timedelta):
            # Django documents run_after as a datetime or a timedelta from now; record the
            # moment, so the result (and a replay of the workflow) sees a fixed time.
            task = dataclasses.replace(task, run_after=timezone.now() + run_after)
        self.validate_task(task)
        enqueued = from_us(to_us(timezone.now()))  # the precision get_result() reads back
        # TaskResult normalises args/kwargs: non-JSON values raise TypeError here.
        result: TaskResult[Any, Any] = TaskResult(
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
            "run_after": to_us(task.run_after) if task.run_after is not None else None,
            "enqueued_at": to_us(enqueued),
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

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
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

    async def aget_result(self, result_id: str) -> TaskResult[Any, Any]:
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
        wait_ms = -(-(run_after - to_us(ctx.now())) // 1000)
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
    task = import_task(spec["task"])  # an ImportError fails the attempt: retried, then shown
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
    task_result: TaskResult[Any, Any],
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


def _record_start(app: App, info: activity.ActivityInfo, worker_id: str, at: datetime) -> None:
    """Append the attempt's start to the history (it gives RUNNING, started_at, worker_ids).

    Best effort: the task runs even if this fails, and only its bookkeeping is missing.
    """
    payload = {"attempt": info.attempt, "worker_id": worker_id, "at": to_us(at)}
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
    app: App,
    workflow_id: str,
    task: Task[Any, Any],
    spec: Mapping[str, Any],
    worker_id: str,
    at: datetime,
) -> TaskResult[Any, Any]:
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
            enqueued_at=from_us(spec["enqueued_at"]),
            started_at=from_us(to_us(at)),
            last_attempted_at=from_us(to_us(at)),
            finished_at=None,
            args=spec["args"],
            kwargs=spec["kwargs"],
            backend=alias,
            errors=[],
            worker_ids=[],
        )
    if result.status != TaskResultStatus.RUNNING:  # the start could not be recorded
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        object.__setattr__(result, "started_at", result.started_at or from_us(to_us(at)))
        object.__setattr__(result, "last_attempted_at", from_us(to_us(at)))
        result.worker_ids.append(worker_id)
    return result


def _finish(
    result: TaskResult[Any, Any],
    status: TaskResultStatus,
    error: TaskError | None,
    value: Any = None,
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


def _send(signal: Any, result: TaskResult[Any, Any]) -> None:
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


def _handle(result_id: Any) -> Any:
    return get_app().get_handle(str(result_id))
