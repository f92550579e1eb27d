"""Exceptions raised by DurableFuture.

Every exception a user can catch derives from :class:`DFError`::

    DFError
    ├── ConfigurationError            a setting is missing or has a bad value
    ├── DFConnectionError             NATS cannot be reached
    ├── RegistrationError             a workflow/activity name is unknown or registered twice
    ├── PayloadError
    │   ├── SerializationError        a value cannot be encoded to or decoded from JSON
    │   ├── PayloadTooLargeError      an encoded message exceeds the server's max_payload
    │   └── CodecUnavailableError     this process cannot decode a message now (retried)
    │       └── CodecKeyError         a message was encrypted with a key this process lacks
    ├── WorkflowAlreadyStartedError   start(..., if_exists="fail") found the id in use
    ├── WorkflowNotFoundError         no history exists for a workflow id
    ├── WorkflowFailureError          handle.result(): the run failed, timed out or was cancelled
    ├── NondeterminismError           workflow code no longer matches its recorded history
    ├── ApplicationError              raised by user code to control retries
    └── ActivityError                 an activity failed for good; raised inside the workflow
        (the cause's type name and message are attached)

:class:`CancelledError` derives from :class:`asyncio.CancelledError` (a ``BaseException``), so a
bare ``except Exception`` in workflow code cannot swallow a cancellation by accident.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Sequence
from typing import Any


class DFError(Exception):
    """Root of every DurableFuture error."""


class ConfigurationError(DFError):
    """A setting is missing or invalid; the message names the key."""


class DFConnectionError(DFError):
    """The NATS server could not be reached (or the connection was lost)."""


class RegistrationError(DFError):
    """An unknown workflow/activity name, or a name registered twice."""


class PayloadError(DFError):
    """A payload could not be encoded, decoded or sent."""


class SerializationError(PayloadError):
    """A value cannot be converted to or from JSON."""


class PayloadTooLargeError(PayloadError):
    """An encoded message is larger than the server accepts."""


_KEY_HINT = (
    "every client and worker must share the codec's keys; keep old keys configured during a "
    "rotation"
)


class CodecUnavailableError(PayloadError):
    """This process cannot decode a message now, though the message itself may be fine.

    The codec lacks the key, reads an older format than the writer's, or failed for a reason of
    its own (a key service that timed out). The engine hands such a message back with backoff,
    so a process that can read it (or this one, once fixed) does; it never dead-letters it. A
    codec should raise a plain :class:`PayloadError` for data it can never decode.
    """


class CodecKeyError(CodecUnavailableError):
    """A message is in the codec's format but was encoded with a key this process does not have.

    This is a configuration problem of the reading process, not bad data: the message is
    intact and becomes readable once the key is configured. Data that is not in the codec's
    format, or fails authentication with a known key, raises a plain :class:`PayloadError`.

    Args:
        key_id: the id of the key the message was encoded with.
        known_key_ids: the ids of the keys this process has.
        what: which message, for the message; the engine names it (``"history message 7"``).
        hint: what to do about it.

    Attributes:
        key_id: the id of the key the message was encoded with.
        known_key_ids: the ids of the keys this process has.
        what: which message could not be read.
    """

    def __init__(
        self,
        key_id: str,
        known_key_ids: Sequence[str],
        *,
        what: str = "a message",
        hint: str = _KEY_HINT,
    ) -> None:
        self.key_id = key_id
        self.known_key_ids = tuple(known_key_ids)
        self.hint = hint
        self.what = what
        super().__init__(self._describe())

    def about(self, what: str) -> CodecKeyError:
        """Name the message that could not be read; returns this error, its message updated.

        Args:
            what: which message (``"history message 7"``).
        """
        self.what = what
        self.args = (self._describe(),)
        return self

    def _describe(self) -> str:
        known = ", ".join(self.known_key_ids) or "none"
        return (
            f"cannot decrypt {self.what}: it was encrypted with key id {self.key_id}, and this "
            f"process only has key ids {known}; {self.hint}"
        )


class WorkflowAlreadyStartedError(DFError):
    """A workflow with this id already exists and the start policy says to fail."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} was already started; use app.get_handle({workflow_id!r}) "
            "to follow it, or start with if_exists='use_existing' (the default)"
        )
        self.workflow_id = workflow_id


class WorkflowNotFoundError(DFError):
    """No history exists for the workflow id (the one error for "no such workflow").

    ``detail`` replaces the default message where the caller knows more, such as a worker that
    was handed a message for a workflow that was never started.
    """

    def __init__(
        self,
        workflow_id: str,
        namespace: str,
        setting: str = "DF_NAMESPACE",
        *,
        detail: str | None = None,
    ) -> None:
        super().__init__(
            detail
            or f"no workflow with id {workflow_id!r} in namespace {namespace!r}; "
            f"check the id and that the client uses the same {setting} as the worker"
        )
        self.workflow_id = workflow_id
        self.namespace = namespace


class NondeterminismError(DFError):
    """Workflow code no longer matches its recorded history.

    The history is left untouched; deploy code that matches it (or version the change)
    and the worker picks the workflow up again.
    """

    def __init__(self, workflow_id: str, step: int, recorded: str, produced: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is not deterministic at step {step}: the history "
            f"recorded {recorded}, but the code now does {produced}. The history was not changed; "
            "restore the previous code, or guard the change with ctx.patched('change-id') "
            "(docs/versioning.md), and the workflow will continue."
        )
        self.workflow_id = workflow_id
        self.step = step
        self.recorded = recorded
        self.produced = produced


class ChildWorkflowError(DFError):
    """A child workflow did not complete: it failed, timed out, was cancelled, or could not be
    started (``status`` is then ``"not_started"``).

    Attributes:
        workflow_id: the child's id.
        workflow_type: its registered name.
        status: ``failed``, ``timed_out``, ``cancelled`` or ``not_started``.
        cause_type: the type name of the child's error (``"ActivityError"``...).
        cause_message: that error's message.
    """

    def __init__(
        self,
        workflow_id: str,
        workflow_type: str,
        status: str,
        cause_type: str,
        cause_message: str,
    ) -> None:
        super().__init__(
            f"child workflow {workflow_id!r} ({workflow_type}) {status.replace('_', ' ')}: "
            f"{cause_type}: {cause_message}"
        )
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self.status = status
        self.cause_type = cause_type
        self.cause_message = cause_message


class ApplicationError(DFError):
    """Raise from an activity (or workflow) to fail it with control over retries.

    Args:
        message: what went wrong.
        type: a short error type name; defaults to ``"ApplicationError"``.
        non_retryable: when true, the engine does not retry the activity.
        next_retry_delay: overrides the retry policy's backoff for the next attempt (seconds).
        details: JSON-serialisable values passed to the workflow with the failure.
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        next_retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type or "ApplicationError"
        self.non_retryable = non_retryable
        self.next_retry_delay = next_retry_delay
        self.details: Sequence[Any] = details


class ActivityError(DFError):
    """An activity failed for good (retries exhausted, non-retryable, or timed out).

    Attributes:
        activity: the activity's registered name.
        cause_type: the type name of the last error (``"ValueError"``, ``"TimeoutError"``...).
        cause_message: that error's message.
        attempts: how many attempts were made.
        non_retryable: whether the failure was marked non-retryable.
    """

    def __init__(
        self,
        activity: str,
        cause_type: str,
        cause_message: str,
        attempts: int,
        *,
        non_retryable: bool = False,
        details: Sequence[Any] = (),
    ) -> None:
        super().__init__(
            f"activity {activity!r} failed after {attempts} attempt(s): "
            f"{cause_type}: {cause_message}"
        )
        self.activity = activity
        self.cause_type = cause_type
        self.cause_message = cause_message
        self.attempts = attempts
        self.non_retryable = non_retryable
        self.details = details


class WorkflowFailureError(DFError):
    """The workflow ended without a result: it failed, timed out or was cancelled.

    Attributes:
        workflow_id: the workflow's id.
        status: ``"failed"``, ``"timed_out"`` or ``"cancelled"``.
        cause_type: the type name of the error that ended it (``None`` when cancelled).
        cause_message: that error's message.
    """

    def __init__(
        self, workflow_id: str, status: str, cause_type: str | None, cause_message: str
    ) -> None:
        what = f"{cause_type}: {cause_message}" if cause_type else cause_message
        super().__init__(f"workflow {workflow_id!r} {status}: {what}")
        self.workflow_id = workflow_id
        self.status = status
        self.cause_type = cause_type
        self.cause_message = cause_message


class CancelledError(asyncio.CancelledError):
    """The workflow (or activity) was cancelled. Catch it to compensate, then re-raise."""


class UnregisteredWorkflowError(RegistrationError):
    """A run was started under a name no workflow of this worker has.

    Nothing is written for the run: the worker notes ``WorkflowTaskFailed`` (the run shows as
    ``failing``, with this message) and hands the task back with backoff, so the run starts as
    soon as workers that have the workflow serve its queue (a web deploy that landed before
    the workers' does this). It is never failed for it.
    """

    def __init__(self, name: str, task_queue: str) -> None:
        super().__init__(
            f"workflow {name!r} is not registered on the workers of task queue {task_queue!r}; "
            "it waits until they have it: define it with @app.workflow in a module the "
            "workers import and restart them (or check the name it was started with)"
        )


class WorkflowCodeError(DFError):
    """The workflow code raised an exception that is not a deliberate failure: a bug.

    The worker writes nothing for the step, records a ``WorkflowTaskFailed`` note and retries
    the task with backoff, so once the code is fixed (and workers restarted) the workflow
    continues where it was. Deliberate failures end the workflow instead: any
    :class:`DFError` (``ApplicationError``, an ``ActivityError`` left uncaught, ...),
    ``TimeoutError`` from a durable timeout, and cancellation.
    """

    def __init__(self, workflow_id: str, workflow_type: str, exc: BaseException) -> None:
        self.traceback = "".join(traceback.format_exception(exc)[-8:])
        super().__init__(
            f"workflow {workflow_id!r} ({workflow_type}): its code raised "
            f"{type(exc).__name__}: {exc}. Treated as a bug: the step is retried with backoff "
            "and the workflow shows as failing until the code is fixed and the workers "
            "restarted (to fail a workflow on purpose, raise dfcore.ApplicationError).\n"
            + self.traceback
        )


def error_json(exc: BaseException) -> dict[str, Any]:
    """An exception as a failure record stores it: type, message, details, traceback."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ApplicationError):
        error["type"] = exc.type
        error["message"] = exc.message
        error["details"] = list(exc.details)
    if isinstance(exc, ActivityError | ChildWorkflowError):
        error["cause_type"] = exc.cause_type
    error["traceback"] = "".join(traceback.format_exception(exc)[-6:])
    return error


def outside_workflow(what: str) -> DFError:
    """``ctx.<what>()`` was called where no workflow code runs."""
    return DFError(
        f"ctx.{what}() was called outside the workflow's code (from an activity, another "
        "thread or a callback): call it in the workflow function itself, which ctx was "
        "passed to"
    )
