"""The exceptions of the Celery facade, named as Celery names them."""

from __future__ import annotations

import builtins

from dfcore import DFError


class CeleryError(DFError):
    """Base of the facade's own errors."""


class NotSupportedError(CeleryError):
    """A Celery feature the facade does not carry out (docs/celery.md lists each one)."""


class TimeoutError(CeleryError, builtins.TimeoutError):
    """``AsyncResult.get(timeout=...)`` ran out of time; the task goes on."""


class MaxRetriesExceededError(CeleryError):
    """``self.retry()`` was called once more than ``max_retries`` allows."""


class TaskRevokedError(CeleryError):
    """The task was revoked (``AsyncResult.revoke()``) or expired before it ran."""


class Retry(Exception):
    """Raised by ``self.retry()``: the attempt ends, and the task runs again ``when`` seconds
    later."""

    def __init__(self, exc: BaseException | None = None, when: float = 0.0) -> None:
        super().__init__(f"Retry in {when}s: {exc!r}" if exc is not None else f"Retry in {when}s")
        self.exc = exc
        self.when = when


class TaskError(CeleryError):
    """A task raised an exception of a type this process cannot rebuild; ``type_name`` is the
    original type's name."""

    type_name = "TaskError"


def unsupported(feature: str) -> NotSupportedError:
    return NotSupportedError(
        f"{feature} is not supported by dfcore.contrib.celery: docs/celery.md lists what is "
        "supported, what differs and what is not"
    )


def rebuild(type_name: str | None, message: str) -> BaseException:
    """The exception a task raised, as far as this process can make it again: a builtin
    exception of that name, else a :class:`TaskError` subclass named after it."""
    if type_name == "TaskRevokedError":
        return TaskRevokedError(message)
    kind = getattr(builtins, type_name or "", None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except TypeError:
            pass
    error_type: type[TaskError] = type(
        type_name or "TaskError", (TaskError,), {"type_name": type_name}
    )
    return error_type(message)
