"""What the engine tells observers (tracing, metrics), and the trace context it carries for them.

An observer sees a workflow's life as the engine lives it: a start being sent, each decision a
worker appends (with the facts that led to it), each activity attempt. It never sees a replay:
a decision is reported by the one worker whose append the server accepted, once, and the facts
a replay steps over are not reported again.

Trace context travels in message headers, never in payloads, so it works under an encrypting
codec. Only the W3C names are carried (:data:`TRACE_HEADERS`), each cut off at a length, so a
stray publisher's headers cannot grow what a worker keeps or passes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("dfcore.engine")

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
MAX_TRACE_HEADER = 1024  # characters; tracestate is at most 512 by the W3C's rule

CacheOutcome = Literal["hit", "miss", "replay"]
AttemptOutcome = Literal["completed", "failed", "timed_out", "cancelled"]


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The trace context among a message's headers: the W3C names only, each of bounded size."""
    if not headers:
        return {}
    return {
        name: value
        for name in TRACE_HEADERS
        if isinstance(value := headers.get(name), str) and 0 < len(value) <= MAX_TRACE_HEADER
    }


@dataclass(frozen=True)
class ObservedStart:
    """A workflow start being prepared, where it is started (a view, a script, a relay's row)."""

    workflow_id: str
    workflow_type: str
    task_queue: str


@dataclass(frozen=True)
class ObservedInput:
    """A fact a decision answered: its ``kind`` (``start``, ``activity``, ``timer``, ``signal``,
    ``cancel``, ``child``), a name (the timer's label or purpose, the signal's name, the
    activity's), and when it began and happened (epoch milliseconds, the server's clock).

    ``began_ms`` is when the timer was started or the signal sent (None when not known).
    """

    kind: str
    name: str
    at_ms: int
    began_ms: int | None = None
    failed: bool = False


@dataclass(frozen=True)
class ObservedTask:
    """A workflow task whose decision the server accepted.

    Attributes:
        workflow_id, workflow_type, run, task_queue: whose task it was.
        trace: the trace context its start carried.
        began_ns, ended_ns: wall-clock nanoseconds, from when the worker took the message to
            when the decision was appended.
        cache: ``hit`` (the run was cached), ``miss`` (it was not, and nothing needed reading:
            a first task), ``replay`` (its history was read and replayed).
        conflicts: appends of this task the server refused (another writer was first).
        inputs: the facts the decision answers, oldest first.
        commands: the decision's command types, in order.
        status: ``completed``, ``failed``, ``cancelled`` or ``timed_out`` when it ended the
            workflow; ``continued`` when it continued as new; else None.
        started_ms: when the workflow's run started (server clock).
    """

    workflow_id: str
    workflow_type: str
    run: int
    task_queue: str
    trace: Mapping[str, str]
    began_ns: int
    ended_ns: int
    cache: CacheOutcome
    conflicts: int
    inputs: tuple[ObservedInput, ...]
    commands: tuple[str, ...]
    status: str | None
    started_ms: int
    failure: str | None = None


@dataclass(frozen=True)
class ObservedAttempt:
    """An activity attempt about to run.

    ``trace`` is the context its task carried (the decision that scheduled it);
    ``scheduled_ms`` is when the server stored its task (server clock).
    """

    workflow_id: str
    activity: str
    attempt: int
    task_queue: str
    trace: Mapping[str, str]
    scheduled_ms: int
    run: int = 1
    seq: int = 0


class AttemptObservation:
    """What an observer holds for one attempt: entered where the code runs, ended once."""

    def running(self) -> AbstractContextManager[Any]:
        """Entered around the activity's code, on its thread or in its task."""
        return contextlib.nullcontext()

    def end(self, outcome: AttemptOutcome, error: BaseException | None = None) -> None:
        """The attempt's outcome, as the worker records it."""


class Observer:
    """Hooks for tracing and metrics; override what you need (every hook does nothing here).

    Register one with :meth:`dfcore.App.add_observer`. Hooks run on the engine's path, so they
    must be quick; what one raises is logged and dropped, and the engine goes on.
    """

    def start(self, start: ObservedStart) -> Mapping[str, str]:
        """A start is being prepared; return the trace headers it should carry."""
        return {}

    def workflow_task(self, task: ObservedTask) -> Mapping[str, str]:
        """A decision was appended; return the trace headers the work it starts should carry
        (activity tasks, child workflows). Empty: they carry the start's."""
        return {}

    def activity_attempt(self, attempt: ObservedAttempt) -> AttemptObservation | None:
        """An attempt is about to run."""
        return None

    def cache(self, task_queue: str, outcome: CacheOutcome) -> None:
        """A workflow task found its run cached, or started one, or replayed its history."""

    def append_conflict(self, task_queue: str) -> None:
        """A decision's append was refused: another writer appended first."""


class Observers:
    """The observers of an App, called in turn; one that raises is logged and skipped."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.all: list[Observer] = observers if observers is not None else []

    def __bool__(self) -> bool:
        return bool(self.all)

    def start(self, start: ObservedStart) -> dict[str, str]:
        return self._headers("start", start)

    def workflow_task(self, task: ObservedTask) -> dict[str, str]:
        return self._headers("workflow_task", task)

    def activity_attempt(self, attempt: ObservedAttempt) -> list[AttemptObservation]:
        held = []
        for observer in self.all:
            with _logged(observer, "activity_attempt"):
                observation = observer.activity_attempt(attempt)
                if observation is not None:
                    held.append(observation)
        return held

    def cache(self, task_queue: str, outcome: CacheOutcome) -> None:
        for observer in self.all:
            with _logged(observer, "cache"):
                observer.cache(task_queue, outcome)

    def append_conflict(self, task_queue: str) -> None:
        for observer in self.all:
            with _logged(observer, "append_conflict"):
                observer.append_conflict(task_queue)

    def _headers(self, hook: str, event: Any) -> dict[str, str]:
        carried: dict[str, str] = {}
        for observer in self.all:
            with _logged(observer, hook):
                carried.update(getattr(observer, hook)(event))
        return trace_headers(carried)


@contextlib.contextmanager
def _logged(observer: Observer, hook: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception("observer %r: %s() raised; the engine goes on without it", observer, hook)
