"""A Celery-API facade on durable workflows: change the imports, keep the code.

``from dfcore.contrib.celery import Celery, shared_task`` in place of ``from celery import
...``: ``@app.task`` and ``@shared_task`` functions, ``delay`` and ``apply_async``
(``countdown``, ``eta``, ``expires``, ``task_id``, ``queue``), bound tasks with
``self.request`` and ``self.retry()``, ``autoretry_for`` and Celery's retry options, and
``AsyncResult`` with ``get``, ``state``, ``ready``, ``successful``, ``result``, ``traceback`` and
``revoke``; signatures (``.s()``, ``.si()``) and ``chain`` (``|``), ``group`` and ``chord``,
each run as one durable workflow; ``link=`` and ``link_error=``, started by the task's own
workflow; ``delay_on_commit`` through Django's transactional outbox; and ``beat_schedule``
entries (``crontab`` from :mod:`dfcore.contrib.celery.schedules`) as schedules the workers
keep, with no beat process. Each call is a durable workflow: a countdown is a durable timer, a
``task_id`` makes the call idempotent, and a worker that dies mid-task loses nothing. What
differs and what is not supported yet is in ``docs/celery.md``.
"""

from . import schedules, states
from ._app import Celery, SharedTask, current_app, shared_task
from ._canvas import Canvas, Signature, chain, chord, group, signature
from ._result import AsyncResult
from ._task import Request, Task
from .exceptions import (
    CeleryError,
    MaxRetriesExceededError,
    NotSupportedError,
    Retry,
    TaskError,
    TaskRevokedError,
    TimeoutError,
)

__all__ = [
    "AsyncResult",
    "Canvas",
    "Celery",
    "CeleryError",
    "MaxRetriesExceededError",
    "NotSupportedError",
    "Request",
    "Retry",
    "SharedTask",
    "Signature",
    "Task",
    "TaskError",
    "TaskRevokedError",
    "TimeoutError",
    "chain",
    "chord",
    "current_app",
    "group",
    "schedules",
    "shared_task",
    "signature",
    "states",
]
