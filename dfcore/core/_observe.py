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
from collections.abc import Mapping
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
        seq: the history sequence of the decision's record (unique in the workflow).
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
        failure: the error that failed the workflow (``Type: message``), when it did.
    """

    workflow_id: str
    workflow_type: str
    run: int
    task_queue: str
    seq: int
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


@dataclass(frozen=True)
class ObservedQueue:
    """A task queue's figures as its consumers on the server hold them, for one ``kind`` of
    task (``workflow`` or ``activity``)."""

    task_queue: str
    kind: str
    backlog: int
    in_flight: int


@dataclass(frozen=True)
class ObservedGauges:
    """What a worker holds now: the queues it serves, and its cached runs per queue."""

    queues: tuple[ObservedQueue, ...]
    cached_runs: Mapping[str, int]


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

    def gauges(self, gauges: ObservedGauges) -> None:
        """A worker's current figures, now and then (and whenever its metrics are scraped)."""


class Observers:
    """The observers of an App, called in turn; one that raises is logged and skipped.

    (The hooks are on every workflow task's path: each call is a plain loop and try.)
    """

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.all: list[Observer] = observers if observers is not None else []

    def __bool__(self) -> bool:
        return bool(self.all)

    def start(self, start: ObservedStart) -> dict[str, str]:
        carried: dict[str, str] = {}
        for observer in self.all:
            try:
                carried.update(observer.start(start))
            except Exception:
                _raised(observer, "start")
        return trace_headers(carried)

    def workflow_task(self, task: ObservedTask) -> dict[str, str]:
        carried: dict[str, str] = {}
        for observer in self.all:
            try:
                carried.update(observer.workflow_task(task))
            except Exception:
                _raised(observer, "workflow_task")
        return trace_headers(carried) if carried else carried

    def activity_attempt(self, attempt: ObservedAttempt) -> list[AttemptObservation]:
        held = []
        for observer in self.all:
            try:
                observation = observer.activity_attempt(attempt)
            except Exception:
                _raised(observer, "activity_attempt")
            else:
                if observation is not None:
                    held.append(observation)
        return held

    def cache(self, task_queue: str, outcome: CacheOutcome) -> None:
        self._tell("cache", task_queue, outcome)

    def append_conflict(self, task_queue: str) -> None:
        self._tell("append_conflict", task_queue)

    def want_gauges(self) -> bool:
        """Whether any observer takes the gauges (so a worker reads them now and then)."""
        return any(type(o).gauges is not Observer.gauges for o in self.all)

    def gauges(self, gauges: ObservedGauges) -> None:
        self._tell("gauges", gauges)

    def _tell(self, hook: str, *args: Any) -> None:
        for observer in self.all:
            try:
                getattr(observer, hook)(*args)
            except Exception:
                _raised(observer, hook)


def _raised(observer: Observer, hook: str) -> None:
    log.exception("observer %r: %s() raised; the engine goes on without it", observer, hook)
