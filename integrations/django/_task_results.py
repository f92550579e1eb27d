"""A Django task's ``TaskResult``, read back from its workflow's history."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from dfcore import ActivityError, EventType, HistoryEvent

from ._task_options import (
    STARTED_SIGNAL,
    WORKFLOW,
    exception_path,
    from_ms,
    from_us,
)

try:  # Django 6.0 and later; before, tasks.py refuses the backend and nothing calls this
    from django.tasks import Task, TaskResult, TaskResultStatus
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
except ImportError:
    pass


def result_from_history(
    result_id: str,
    events: Sequence[HistoryEvent],
    alias: str,
    *,
    task: Task[Any, Any] | None = None,
) -> TaskResult[Any, Any]:
    """Build the ``TaskResult`` of a task from its workflow's history.

    READY until an attempt starts (also while ``run_after`` has not come, and between
    attempts), RUNNING while one runs, then SUCCESSFUL or FAILED. ``errors`` has one entry per
    failed attempt; ``worker_ids`` one per attempt started.

    Raises:
        TaskResultDoesNotExist: the workflow does not run a Django task, or its task function
            cannot be imported here.
    """
    if not events or events[0].type != EventType.WORKFLOW_STARTED:
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
        if event.type == EventType.SIGNAL_RECEIVED and attrs.get("name") == STARTED_SIGNAL:
            payload = attrs.get("payload") or {}
            at = from_us(payload["at"]) if "at" in payload else from_ms(event.time_ms)
            started_at = started_at or at
            last_attempted_at = at
            worker_ids.append(str(payload.get("worker_id", "")))
            running.add(int(payload.get("attempt", 0)))
        elif event.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED):
            running.discard(int(attrs.get("attempt", 0)))
            if event.type == EventType.ACTIVITY_FAILED:
                errors.append(_error_from_record(attrs.get("error") or {}))
        elif event.type == EventType.WORKFLOW_COMPLETED:
            status, finished_at, value = (
                TaskResultStatus.SUCCESSFUL,
                from_ms(event.time_ms),
                attrs.get("result"),
            )
        elif event.type == EventType.CANCEL_REQUESTED:
            cancel_reason = str(attrs.get("reason") or "")
        elif event.type in (
            EventType.WORKFLOW_FAILED,
            EventType.WORKFLOW_TIMED_OUT,
            EventType.WORKFLOW_CANCELLED,
        ):
            status, finished_at = TaskResultStatus.FAILED, from_ms(event.time_ms)
            error = attrs.get("error") or {}
            if event.type == EventType.WORKFLOW_CANCELLED:
                errors.append(_cancelled(cancel_reason))
            elif error.get("type") != ActivityError.__name__:  # attempts' errors are listed
                errors.append(_error_from_record(error))
    if status == TaskResultStatus.READY and running:
        status = TaskResultStatus.RUNNING
    if finished_at is not None and last_attempted_at is not None:
        # History times are whole milliseconds, attempts' starts microseconds: an end in the
        # same millisecond as the last start must not read as before it.
        finished_at = max(finished_at, last_attempted_at)
    result: TaskResult[Any, Any] = TaskResult(
        task=task,
        id=result_id,
        status=status,
        enqueued_at=from_us(spec["enqueued_at"]),
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


def _result_task(
    result_id: str, spec: Mapping[str, Any], alias: str, task: Task[Any, Any] | None
) -> Task[Any, Any]:
    """The Task the result was enqueued for: the decorated function (``task``, if already
    imported), with its recorded queue, priority and run_after."""
    try:
        task = task or import_task(spec["task"])
    except ImportError as exc:
        raise TaskResultDoesNotExist(
            f"{result_id!r} is a result of task {spec['task']!r}, which cannot be imported "
            f"here ({exc}); deploy the code that defines it to read the result"
        ) from exc
    recorded = {
        "queue_name": spec.get("queue_name", task.queue_name),
        "priority": spec.get("priority", task.priority),
        "run_after": from_us(spec["run_after"]) if spec.get("run_after") is not None else None,
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
    return TaskError(exception_class_path=exception_path(name), traceback=text)


def _cancelled(reason: str) -> TaskError:
    text = f"CancelledError: the task was cancelled{': ' + reason if reason else ''}\n"
    return TaskError(exception_class_path="dfcore.CancelledError", traceback=text)


def import_task(path: str) -> Task[Any, Any]:
    found = import_string(path)
    if not isinstance(found, Task):
        raise ImportError(
            f"{path!r} is a {type(found).__name__}, not a Django task; it was enqueued as one, "
            "so decorate it with @task again (or enqueue the task that replaced it)"
        )
    return found
