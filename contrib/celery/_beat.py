"""``beat_schedule`` entries as DurableFuture schedules of the ``celery.task`` workflow.

Each entry becomes a :class:`dfcore.ScheduleSpec` that starts the entry's task with its
``args`` and ``kwargs``: a crontab as a cron expression in the Celery ``timezone`` setting
(UTC by default), an interval as ``every``. Like Celery beat, a time starts the task even
while the one before still runs (``overlap="allow"``), and after downtime only the latest
missed time runs (``catch_up="last"``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from dfcore import ConfigurationError, ScheduleSpec

from ._canvas import WORKFLOW
from .exceptions import unsupported
from .schedules import crontab, schedule

#: The keys of a beat_schedule entry this facade carries out (the rest raise, naming them).
ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options", "relative"})
#: The ``options`` of an entry it carries out.
ENTRY_OPTIONS = frozenset({"queue"})
_VALID_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_OTHER = re.compile(r"[^A-Za-z0-9_-]+")


def schedule_id(name: str) -> str:
    """The schedule id of the beat entry ``name``: the name itself when it is a valid id (1 to
    64 letters, digits, ``_`` or ``-``); else the name with each run of other characters made a
    ``-``, cut to 55 characters, and ``-`` and the first 8 hex digits of the name's SHA-256
    added, so that two names never share an id (``"report at 7:30"`` ->
    ``"report-at-7-30-<8 hex digits>"``)."""
    if _VALID_ID.fullmatch(name):
        return name
    base = _OTHER.sub("-", name).strip("-")[:55] or "beat"
    return f"{base}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def beat_spec(
    name: str,
    entry: Mapping[str, Any],
    timezone: str | None,
    queue_of: Callable[[str], str | None],
) -> ScheduleSpec:
    """The schedule of the beat entry ``name``; ``queue_of(task name)`` gives a task's queue.

    Raises:
        ConfigurationError: the entry lacks its task or schedule, or a value is invalid.
        NotSupportedError: the entry has a key or option this facade does not carry out.
    """
    if not isinstance(entry, Mapping):
        raise ConfigurationError(
            f"beat_schedule entry {name!r} must be a dict with 'task' and 'schedule'"
        )
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise unsupported(f"the beat_schedule key {unknown[0]!r} (in the entry {name!r})")
    options = dict(entry.get("options") or {})
    unknown = sorted(set(options) - ENTRY_OPTIONS)
    if unknown:
        raise unsupported(f"the beat_schedule option {unknown[0]!r} (in the entry {name!r})")
    task = entry.get("task")
    if not isinstance(task, str) or not task:
        raise ConfigurationError(
            f"beat_schedule entry {name!r} has no 'task': give the name of the task to run, "
            "such as 'proj.tasks.add'"
        )
    when = _when(name, entry.get("schedule"), timezone or "UTC")
    start = [task, list(entry.get("args") or ()), dict(entry.get("kwargs") or {}), 0.0, None]
    try:
        return ScheduleSpec(
            schedule_id(name),
            WORKFLOW,
            args=start,
            task_queue=options.get("queue") or queue_of(task),
            overlap="allow",
            **when,
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"beat_schedule entry {name!r}: {exc}") from None


def _when(name: str, value: Any, timezone: str) -> dict[str, Any]:
    if isinstance(value, crontab):
        return {"cron": value.cron, "timezone": timezone}
    if isinstance(value, schedule):
        return {"every": value.seconds}
    if isinstance(value, timedelta):
        return {"every": value.total_seconds()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"every": float(value)}
    raise ConfigurationError(
        f"beat_schedule entry {name!r}: 'schedule' must be a crontab(...), a schedule(...), a "
        f"timedelta or a number of seconds, not {value!r} (import crontab from "
        "dfcore.contrib.celery.schedules)"
    )
