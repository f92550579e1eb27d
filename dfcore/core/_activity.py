"""What code running inside an activity can ask: its info, heartbeats, cancellation.

The public face is :mod:`dfcore.activity`."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

from dfcore.core._errors import CancelledError, DFError

__all__ = ["ActivityInfo", "heartbeat", "in_activity", "info", "is_cancelled"]


@dataclass(frozen=True)
class ActivityInfo:
    """Facts about the running activity attempt."""

    activity: str
    workflow_id: str
    seq: int
    attempt: int
    task_queue: str
    heartbeat_details: Any = None
    start_to_close: float | None = None
    heartbeat_timeout: float | None = None


@dataclass
class ActivityState:
    """Mutable per-attempt state shared between the activity and its worker's watchdog."""

    info: ActivityInfo
    last_heartbeat: float = field(default_factory=time.monotonic)
    details: Any = None
    cancel_requested: bool = False
    abandoned: bool = False
    started: float = field(default_factory=time.time)  # wall clock, for people


_current: contextvars.ContextVar[ActivityState] = contextvars.ContextVar("dfcore_activity")


def _state() -> ActivityState:
    try:
        return _current.get()
    except LookupError:
        raise DFError(
            "dfcore.activity functions can only be called while an activity runs on a worker"
        ) from None


def in_activity() -> bool:
    """Whether the caller runs inside an activity."""
    return _current.get(None) is not None


def info() -> ActivityInfo:
    """The current attempt's info.

    ``heartbeat_details`` holds the last details the previous attempt reported.
    """
    return _state().info


def heartbeat(*details: Any) -> None:
    """Report progress: keeps the attempt alive and records ``details`` for a retry.

    Raises:
        CancelledError: the workflow cancelled this activity (or its timeout passed);
            stop work and let the exception propagate.
    """
    state = _state()
    state.last_heartbeat = time.monotonic()
    if details:
        state.details = details[0] if len(details) == 1 else list(details)
    if state.cancel_requested or state.abandoned:
        raise CancelledError("the activity was cancelled (or timed out); stop and return")


def is_cancelled() -> bool:
    """Whether cancellation was requested (for code that cannot heartbeat right now)."""
    state = _state()
    return state.cancel_requested or state.abandoned
