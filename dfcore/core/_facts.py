"""The records clients and workers append to a history: typed values, with their wire form.

Whoever observes something appends a *fact*: the client that starts, signals or cancels a
workflow, the activity worker that ran an attempt, the server's scheduler firing a timer, and a
workflow worker noting that the code raised. A workflow worker appends a :class:`Decision`
holding the commands (``_commands``) the code produced. Each type builds its JSON object
(``to_wire``, the form every stored history has) and reads one back (``from_wire``).

A body is read only after ``_history.validate_record`` checked its shape, so ``from_wire``
converts instead of checking again, and fills in what older records leave out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dfcore.core._history import (
    DECIDED,
    EventType,
    int_or,
    mapping_or_empty,
    now_ms,
    seconds_or_none,
)


@dataclass(frozen=True)
class WorkflowStarted:
    """The first record of a history: which workflow, with what, on which queue."""

    type: ClassVar[EventType] = EventType.WORKFLOW_STARTED
    workflow: str
    args: list[Any]
    task_queue: str
    run_id: str
    execution_timeout: float | None = None
    parent: Parent | None = None
    ts: int = field(default_factory=now_ms)
    run: int = 1  # the run's number: 2 and on are continued as new (``ctx.continue_as_new``)
    deadline: int | None = None  # epoch ms: a continued run's execution timeout goes on
    carried: tuple[Mapping[str, Any], ...] = ()  # signals and cancellations the last run missed
    schedule: str | None = None  # the schedule that started it (its end is reported there)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": self.type.value,
            "ts": self.ts,
            "workflow": self.workflow,
            "args": self.args,
            "task_queue": self.task_queue,
            "run_id": self.run_id,
            "prev": 0,
        }
        if self.execution_timeout:
            wire["execution_timeout"] = self.execution_timeout
        if self.parent is not None:
            wire["parent"] = self.parent.to_wire()
        if self.run > 1:
            wire["run"] = self.run
        if self.deadline is not None:
            wire["deadline"] = self.deadline
        if self.carried:
            wire["carried"] = [dict(fact) for fact in self.carried]
        if self.schedule is not None:
            wire["schedule"] = self.schedule
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> WorkflowStarted:
        deadline = wire.get("deadline")
        carried = wire.get("carried")
        return cls(
            workflow=str(wire["workflow"]),
            args=list(wire["args"]),
            task_queue=str(wire.get("task_queue") or ""),
            run_id=str(wire.get("run_id") or ""),
            execution_timeout=seconds_or_none(wire.get("execution_timeout")),
            parent=Parent.from_wire(wire.get("parent")),
            ts=int(wire.get("ts", 0)),
            run=run_of(wire),
            deadline=int_or(deadline, 0) or None,
            carried=tuple(_carried(carried)),
            schedule=wire["schedule"] if isinstance(wire.get("schedule"), str) else None,
        )


@dataclass(frozen=True)
class Parent:
    """The workflow that started this one as its child: where its end is reported."""

    workflow_id: str
    history: str  # the parent's history subject
    seq: int  # the parent's call that started it
    run: int = 1  # the parent's run that made the call

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "history": self.history,
            "seq": self.seq,
        }
        if self.run > 1:
            wire["run"] = self.run
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Parent | None:
        if not isinstance(wire, Mapping):
            return None
        workflow_id, history, seq = wire.get("workflow_id"), wire.get("history"), wire.get("seq")
        if not (isinstance(workflow_id, str) and isinstance(history, str)):
            return None
        if not isinstance(seq, int) or isinstance(seq, bool):
            return None
        return cls(workflow_id, history, seq, run_of(wire))


@dataclass(frozen=True)
class ActivityCompleted:
    """Attempt ``attempt`` of activity call ``seq`` returned ``result``."""

    type: ClassVar[EventType] = EventType.ACTIVITY_COMPLETED
    seq: int
    attempt: int
    result: Any
    ts: int = field(default_factory=now_ms)
    run: int = 1

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "t": self.type.value,
            "ts": self.ts,
            "seq": self.seq,
            "attempt": self.attempt,
            "result": self.result,
        }
        return _with_run(wire, self.run)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ActivityCompleted:
        ts = int(wire.get("ts", 0))
        return cls(int(wire["seq"]), int(wire["attempt"]), wire.get("result"), ts, run_of(wire))


@dataclass(frozen=True)
class ActivityFailed:
    """Attempt ``attempt`` of call ``seq`` raised, timed out or could not run.

    ``error`` is ``_errors.error_json``'s form; ``heartbeat`` the attempt's last details, which
    the next attempt starts from.
    """

    type: ClassVar[EventType] = EventType.ACTIVITY_FAILED
    seq: int
    attempt: int
    error: Mapping[str, Any]
    heartbeat: Any = None
    ts: int = field(default_factory=now_ms)
    run: int = 1

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "t": self.type.value,
            "ts": self.ts,
            "seq": self.seq,
            "attempt": self.attempt,
            "error": dict(self.error),
            "heartbeat": self.heartbeat,
        }
        return _with_run(wire, self.run)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ActivityFailed:
        return cls(
            seq=int(wire["seq"]),
            attempt=int(wire["attempt"]),
            error=mapping_or_empty(wire.get("error")),
            heartbeat=wire.get("heartbeat"),
            ts=int(wire.get("ts", 0)),
            run=run_of(wire),
        )


@dataclass(frozen=True)
class TimerFired:
    """Durable timer ``timer`` fired; the server's scheduler appends it at ``ts``."""

    type: ClassVar[EventType] = EventType.TIMER_FIRED
    timer: str
    ts: int
    run: int = 1

    def to_wire(self) -> dict[str, Any]:
        return _with_run({"t": self.type.value, "timer": self.timer, "ts": self.ts}, self.run)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> TimerFired:
        return cls(str(wire["timer"]), int(wire.get("ts", 0)), run_of(wire))


@dataclass(frozen=True)
class SignalReceived:
    type: ClassVar[EventType] = EventType.SIGNAL_RECEIVED
    name: str
    payload: Any = None
    ts: int = field(default_factory=now_ms)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.type.value, "ts": self.ts, "name": self.name, "payload": self.payload}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> SignalReceived:
        return cls(str(wire["name"]), wire.get("payload"), int(wire.get("ts", 0)))


@dataclass(frozen=True)
class CancelRequested:
    type: ClassVar[EventType] = EventType.CANCEL_REQUESTED
    reason: str = ""
    ts: int = field(default_factory=now_ms)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.type.value, "ts": self.ts, "reason": self.reason}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> CancelRequested:
        return cls(str(wire.get("reason") or ""), int(wire.get("ts", 0)))


@dataclass(frozen=True)
class WorkflowTaskFailed:
    """A note for people that the code raised (a bug) after record ``prev``; replay skips it."""

    type: ClassVar[EventType] = EventType.WORKFLOW_TASK_FAILED
    error: Mapping[str, Any]
    attempt: int
    prev: int
    ts: int = field(default_factory=now_ms)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": self.type.value,
            "ts": self.ts,
            "error": dict(self.error),
            "attempt": self.attempt,
            "prev": self.prev,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> WorkflowTaskFailed:
        return cls(
            error=dict(wire["error"]),
            attempt=int_or(wire.get("attempt"), 0),
            prev=int_or(wire.get("prev"), 0),
            ts=int(wire.get("ts", 0)),
        )


@dataclass(frozen=True)
class ChildWorkflowStarted:
    """The child of call ``seq`` has its history: it runs (appended by the parent's worker)."""

    type: ClassVar[EventType] = EventType.CHILD_WORKFLOW_STARTED
    seq: int
    workflow_id: str
    run_id: str = ""
    ts: int = field(default_factory=now_ms)
    run: int = 1  # the parent's run that started it

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "t": self.type.value,
            "ts": self.ts,
            "seq": self.seq,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
        }
        return _with_run(wire, self.run)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ChildWorkflowStarted:
        return cls(
            int(wire["seq"]),
            str(wire["workflow_id"]),
            str(wire.get("run_id") or ""),
            int(wire.get("ts", 0)),
            run_of(wire),
        )


@dataclass(frozen=True)
class ChildWorkflowEnded:
    """The child of call ``seq`` ended with ``status`` (a workflow status, or ``not_started``
    when no history could be made for it): its ``result``, or ``error`` in ``error_json``'s
    form."""

    type: ClassVar[EventType] = EventType.CHILD_WORKFLOW_ENDED
    seq: int
    status: str
    result: Any = None
    error: Mapping[str, Any] | None = None
    ts: int = field(default_factory=now_ms)
    run: int = 1  # the parent's run that started it

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": self.type.value,
            "ts": self.ts,
            "seq": self.seq,
            "status": self.status,
            "result": self.result,
        }
        if self.error is not None:
            wire["error"] = dict(self.error)
        return _with_run(wire, self.run)

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ChildWorkflowEnded:
        error = wire.get("error")
        return cls(
            seq=int(wire["seq"]),
            status=str(wire["status"]),
            result=wire.get("result"),
            error=mapping_or_empty(error) if error is not None else None,
            ts=int(wire.get("ts", 0)),
            run=run_of(wire),
        )


Fact = (
    WorkflowStarted
    | ActivityCompleted
    | ActivityFailed
    | TimerFired
    | SignalReceived
    | CancelRequested
    | WorkflowTaskFailed
    | ChildWorkflowStarted
    | ChildWorkflowEnded
)

_FACTS: Mapping[str, Any] = {
    kind.type.value: kind
    for kind in (
        WorkflowStarted,
        ActivityCompleted,
        ActivityFailed,
        TimerFired,
        SignalReceived,
        CancelRequested,
        WorkflowTaskFailed,
        ChildWorkflowStarted,
        ChildWorkflowEnded,
    )
}


def run_of(wire: Mapping[str, Any]) -> int:
    """The run a record belongs to, or whose command it answers: ``run`` if stored, else 1.

    A continued workflow's history can still receive answers to an earlier run's commands (an
    activity that finished late); the engine tells them apart by this number.
    """
    run = int_or(wire.get("run"), 1)
    return run if run >= 1 else 1


def _with_run(wire: dict[str, Any], run: int) -> dict[str, Any]:
    if run > 1:
        wire["run"] = run
    return wire


def _carried(value: Any) -> list[Mapping[str, Any]]:
    """The facts a continued run's start carries: signals and cancellations, as stored."""
    if not isinstance(value, list):
        return []
    kinds = (EventType.SIGNAL_RECEIVED.value, EventType.CANCEL_REQUESTED.value)
    out: list[Mapping[str, Any]] = []
    for fact in value:
        if not isinstance(fact, Mapping) or fact.get("t") not in kinds:
            continue
        ts = fact.get("ts", 0)
        if not isinstance(ts, int) or isinstance(ts, bool):
            continue
        if fact["t"] == EventType.SIGNAL_RECEIVED.value and not isinstance(fact.get("name"), str):
            continue
        out.append(fact)
    return out


def fact_from_wire(wire: Mapping[str, Any]) -> Fact:
    """The fact a stored record holds (its shape already checked on read)."""
    kind = _FACTS.get(wire["t"])
    if kind is None:
        raise ValueError(f"{str(wire['t'])!r} is not a fact")
    fact: Fact = kind.from_wire(wire)
    return fact


@dataclass(frozen=True)
class Decision:
    """The commands (in wire form) a workflow task produced after record ``prev``.

    ``more`` marks all but the last part of a decision too big for one message.
    """

    cmds: list[dict[str, Any]]
    prev: int
    more: bool = False
    ts: int = field(default_factory=now_ms)
    run: int = 1  # the run that decided (workers dispatching it need not have it cached)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": DECIDED, "ts": self.ts, "cmds": self.cmds, "prev": self.prev}
        if self.more:
            wire["more"] = True
        return _with_run(wire, self.run)


def status_pointer(decision: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """What a workflow's status subject holds once it ended: the ending decision's commands
    (for readers' convenience) and ``seq``, where that decision is in the history (the truth:
    readers verify it there)."""
    return {"t": DECIDED, "ts": decision.get("ts", 0), "cmds": decision["cmds"], "seq": seq}
