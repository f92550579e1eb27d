"""The Django tasks backend's names, options and times (``tasks.py`` is the backend)."""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

import dfcore
from dfcore import ConfigurationError, RetryPolicy, check_task_queue

#: The workflow that runs one enqueued task, and the activity that calls the task function.
WORKFLOW = "dfcore.django_task"
ACTIVITY = "dfcore.django_task.run"
#: The signal an attempt records when it starts: its time and worker (``started_at``, ``RUNNING``).
STARTED_SIGNAL = "dfcore.django_task.started"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

OPTIONS: dict[str, Any] = {
    "MAX_ATTEMPTS": 3,
    "RETRY_INTERVAL": 1.0,
    "RETRY_BACKOFF": 2.0,
    "MAX_RETRY_INTERVAL": 100.0,
    "NON_RETRYABLE": (),
    "TIMEOUT": None,
    "ENQUEUE_ON_COMMIT": False,
}


def read_options(alias: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``OPTIONS``; ImproperlyConfigured names the key and what it expects."""

    def label(key: str) -> str:
        return f'settings.TASKS["{alias}"]["OPTIONS"]["{key}"]'

    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f'settings.TASKS["{alias}"]["OPTIONS"] must be a dict, not {type(options).__name__}'
        )
    for key in options:
        if key not in OPTIONS:
            close = difflib.get_close_matches(str(key).upper(), list(OPTIONS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ImproperlyConfigured(
                f"{label(str(key))} is not a DFTaskBackend option{hint}; valid options are: "
                f"{', '.join(OPTIONS)}"
            )
    own = {**OPTIONS, **options}
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
        "non_retryable": exception_paths(label("NON_RETRYABLE"), own["NON_RETRYABLE"]),
        "timeout": None if own["TIMEOUT"] is None else float(own["TIMEOUT"]),
        "enqueue_on_commit": own["ENQUEUE_ON_COMMIT"],
    }


def exception_paths(label: str, value: Any) -> tuple[str, ...]:
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
        elif isinstance(item, str) and exception_path(item) != "builtins.Exception":
            paths.append(exception_path(item))  # a bare built-in name such as "KeyError"
        elif item == "Exception":
            paths.append("builtins.Exception")
        else:
            raise ImproperlyConfigured(
                f"{label} is invalid: {item!r} is not an exception class or the import path of "
                'one (such as "myapp.errors.BadInput")'
            )
    return tuple(paths)


def is_queue_name(name: Any) -> bool:
    try:
        check_task_queue(name)
    except ConfigurationError:
        return False
    return True


def to_us(value: datetime) -> int:
    """Microseconds since the epoch, exactly (a naive datetime is in the current time zone)."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return (value - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """The datetime Django uses for an epoch time: aware UTC, or naive local without USE_TZ."""
    value = EPOCH + timedelta(microseconds=int(us))
    return value if settings.USE_TZ else timezone.make_naive(value)


def from_ms(ms: int) -> datetime:
    return from_us(int(ms) * 1000)


def exception_path(name: str) -> str:
    """An importable path for an exception type name the engine recorded."""
    for module, where in ((builtins, "builtins"), (dfcore, "dfcore")):
        found = getattr(module, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return f"{where}.{name}"
    return "builtins.Exception"
