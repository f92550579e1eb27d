"""Definitions shared by the engine, the worker and the client: retry policy, activity options,
and the registered workflow/activity descriptors."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dfcore.core._errors import ConfigurationError


@dataclass(frozen=True)
class RetryPolicy:
    """How the engine retries a failed activity.

    The delay before attempt ``n + 1`` is ``initial_interval * backoff ** (n - 1)``, capped at
    ``max_interval``. The delay is a durable timer: it survives restarts of every process.

    Args:
        max_attempts: total attempts including the first; ``0`` means unlimited.
        initial_interval: seconds before the first retry.
        backoff: multiplier applied to the interval after each retry.
        max_interval: upper bound for the interval, in seconds.
        non_retryable: error type names (or exception classes) that fail the activity at once.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 100.0
    non_retryable: Sequence[str | type[BaseException]] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ConfigurationError("RetryPolicy.max_attempts must be >= 0 (0 means unlimited)")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise ConfigurationError("RetryPolicy intervals must be >= 0 seconds")
        if self.backoff < 1:
            raise ConfigurationError("RetryPolicy.backoff must be >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        The one backoff formula of the project: activity retries, and the worker's and the
        outbox's own retries, use it.
        """
        try:
            interval = self.initial_interval * self.backoff ** max(attempt - 1, 0)
        except OverflowError:  # attempt ~1000 of an unlimited policy: long past the cap
            interval = self.max_interval
        return float(min(interval, self.max_interval))

    def allows(self, attempt: int) -> bool:
        """Whether another attempt may follow failed attempt ``attempt``."""
        return self.max_attempts == 0 or attempt < self.max_attempts

    def non_retryable_names(self) -> frozenset[str]:
        """The error type names that fail an activity without retrying."""
        return frozenset(_type_name(t) for t in self.non_retryable)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "non_retryable": [_type_name(t) for t in self.non_retryable],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetryPolicy:
        return cls(
            max_attempts=int(data["max_attempts"]),
            initial_interval=float(data["initial_interval"]),
            backoff=float(data["backoff"]),
            max_interval=float(data["max_interval"]),
            non_retryable=tuple(data.get("non_retryable", ())),
        )


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class ActivityOptions:
    """Per-activity options, set at definition and overridable per call.

    ``None`` means "not set here" so that per-call options layer over definition options.
    """

    retry: RetryPolicy | None = None
    start_to_close: float | None = None
    schedule_to_close: float | None = None
    heartbeat_timeout: float | None = None
    task_queue: str | None = None

    def merged(self, override: ActivityOptions) -> ActivityOptions:
        """These options with every field that ``override`` sets replaced."""
        changes = {k: v for k, v in override.__dict__.items() if v is not None}
        return replace(self, **changes)

    def validate(self, name: str) -> None:
        for key in ("start_to_close", "schedule_to_close", "heartbeat_timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigurationError(
                    f"activity {name!r}: {key} must be > 0 seconds, got {value}"
                )


@dataclass(frozen=True)
class ActivityDefinition:
    """A registered activity."""

    name: str
    fn: Callable[..., Any]
    options: ActivityOptions = field(default_factory=ActivityOptions)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@dataclass(frozen=True)
class WorkflowDefinition:
    """A registered workflow."""

    name: str
    fn: Callable[..., Any]
    task_queue: str | None = None
    execution_timeout: float | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def _type_name(t: str | type[BaseException]) -> str:
    return t if isinstance(t, str) else t.__name__
