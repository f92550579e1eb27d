"""The commands workflow code produces: typed values, with the wire form decisions store.

The engine builds every command as one of these and :meth:`to_wire` gives the JSON object a
``Decided`` record holds (the form every stored history has, so replay compares like with
like). :func:`command_from_wire` reads one back for the worker that carries a decision out;
the shape of each has been checked when its record was read (``_history.validate_record``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dfcore.core._history import EventType, int_or, mapping_or_empty, seconds_or_none


@dataclass(frozen=True)
class ScheduleActivity:
    """Run attempt ``attempt`` of activity call ``seq``."""

    seq: int
    attempt: int
    activity: str
    args: list[Any]
    task_queue: str
    start_to_close: float | None
    heartbeat_timeout: float | None
    schedule_to_close: float | None
    retry: Mapping[str, Any]
    heartbeat: Any = None  # the previous attempt's last heartbeat details

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": EventType.ACTIVITY_SCHEDULED.value,
            "seq": self.seq,
            "attempt": self.attempt,
            "activity": self.activity,
            "args": self.args,
            "task_queue": self.task_queue,
            "start_to_close": self.start_to_close,
            "heartbeat_timeout": self.heartbeat_timeout,
            "schedule_to_close": self.schedule_to_close,
            "retry": dict(self.retry),
        }
        if self.heartbeat is not None:
            wire["heartbeat"] = self.heartbeat
        return wire


@dataclass(frozen=True)
class RequestActivityCancel:
    """Tell the activity worker running call ``seq`` that the workflow cancelled it."""

    seq: int

    def to_wire(self) -> dict[str, Any]:
        return {"t": EventType.ACTIVITY_CANCEL_REQUESTED.value, "seq": self.seq}


@dataclass(frozen=True)
class StartTimer:
    """A durable timer: ``purpose`` is ``timer`` (workflow code), ``retry``,
    ``schedule_to_close`` or ``execution_timeout``; ``seq`` is set for the code's own."""

    timer: str
    purpose: str
    duration: float
    fire_at: int  # epoch milliseconds
    seq: int | None = None
    label: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": EventType.TIMER_STARTED.value,
            "timer": self.timer,
            "purpose": self.purpose,
            "duration": self.duration,
            "fire_at": self.fire_at,
        }
        if self.seq is not None:
            wire["seq"] = self.seq
        if self.label is not None:
            wire["label"] = self.label
        return wire


@dataclass(frozen=True)
class CompleteWorkflow:
    result: Any

    def to_wire(self) -> dict[str, Any]:
        return {"t": EventType.WORKFLOW_COMPLETED.value, "result": self.result}


@dataclass(frozen=True)
class FailWorkflow:
    error: Mapping[str, Any]  # ``_errors.error_json``

    def to_wire(self) -> dict[str, Any]:
        return {"t": EventType.WORKFLOW_FAILED.value, "error": dict(self.error)}


@dataclass(frozen=True)
class TimeOutWorkflow:
    error: Mapping[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"t": EventType.WORKFLOW_TIMED_OUT.value, "error": dict(self.error)}


@dataclass(frozen=True)
class CancelWorkflow:
    def to_wire(self) -> dict[str, Any]:
        return {"t": EventType.WORKFLOW_CANCELLED.value}


@dataclass(frozen=True)
class ContinueAsNew:
    """End this run; a fresh run of the same workflow, under the same id, starts with
    ``args`` (``ctx.continue_as_new``).

    ``carried``: the signals this run received and did not wait for, which the next run gets
    (as ``SignalReceived`` records); ``after``: the record at which the run ended, so the
    signals and cancellations that came later reach the next run too.
    """

    args: list[Any]
    deadline: int | None = None  # epoch ms: when the execution timeout ends the workflow
    carried: tuple[Mapping[str, Any], ...] = ()
    after: int = 0

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": EventType.WORKFLOW_CONTINUED_AS_NEW.value, "args": self.args}
        if self.deadline is not None:
            wire["deadline"] = self.deadline
        if self.carried:
            wire["carried"] = [dict(fact) for fact in self.carried]
        if self.after:
            wire["after"] = self.after
        return wire


@dataclass(frozen=True)
class RecordPatch:
    """The code asked ``ctx.patched(patch)`` here and took the new path (or, ``deprecated``,
    called ``ctx.deprecate_patch``: the old path is gone from the code)."""

    patch: str
    deprecated: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"t": EventType.PATCH_RECORDED.value, "patch": self.patch}
        if self.deprecated:
            wire["deprecated"] = True
        return wire


@dataclass(frozen=True)
class StartChild:
    """Start child workflow ``workflow_id`` (call ``seq`` of the parent's code)."""

    seq: int
    workflow: str
    workflow_id: str
    task_queue: str
    args: list[Any]
    parent_close_policy: str = "cancel"  # or "abandon"
    execution_timeout: float | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "t": EventType.CHILD_WORKFLOW_SCHEDULED.value,
            "seq": self.seq,
            "workflow": self.workflow,
            "workflow_id": self.workflow_id,
            "task_queue": self.task_queue,
            "args": self.args,
            "parent_close_policy": self.parent_close_policy,
        }
        if self.execution_timeout:
            wire["execution_timeout"] = self.execution_timeout
        return wire


@dataclass(frozen=True)
class SignalChild:
    """Send signal ``name`` to the child started by call ``child`` (this is call ``seq``)."""

    seq: int
    child: int
    workflow_id: str
    task_queue: str
    name: str
    payload: Any = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": EventType.CHILD_WORKFLOW_SIGNALLED.value,
            "seq": self.seq,
            "child": self.child,
            "workflow_id": self.workflow_id,
            "task_queue": self.task_queue,
            "name": self.name,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class CancelChild:
    """Ask the child started by call ``child`` to cancel."""

    child: int
    workflow_id: str
    task_queue: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": EventType.CHILD_WORKFLOW_CANCEL_REQUESTED.value,
            "child": self.child,
            "workflow_id": self.workflow_id,
            "task_queue": self.task_queue,
        }


MAX_PATCH_ID = 200


def check_patch_id(patch_id: object) -> None:
    """Raise ValueError unless ``patch_id`` can name a change."""
    if not isinstance(patch_id, str) or not 0 < len(patch_id) <= MAX_PATCH_ID:
        raise ValueError(
            f"a patch id must be a non-empty string of at most {MAX_PATCH_ID} characters "
            f"naming the change, such as 'email-receipt'; got {patch_id!r}"
        )


Command = (
    ScheduleActivity
    | RequestActivityCancel
    | StartTimer
    | CompleteWorkflow
    | FailWorkflow
    | TimeOutWorkflow
    | CancelWorkflow
    | ContinueAsNew
    | RecordPatch
    | StartChild
    | SignalChild
    | CancelChild
)


def command_from_wire(wire: Mapping[str, Any]) -> Command:
    """The command a stored decision holds (its shape already checked on read)."""
    kind = wire["t"]
    if kind == EventType.ACTIVITY_SCHEDULED:
        return ScheduleActivity(
            seq=int(wire["seq"]),
            attempt=int(wire["attempt"]),
            activity=str(wire["activity"]),
            args=list(wire["args"]),
            task_queue=str(wire["task_queue"]),
            start_to_close=seconds_or_none(wire.get("start_to_close")),
            heartbeat_timeout=seconds_or_none(wire.get("heartbeat_timeout")),
            schedule_to_close=seconds_or_none(wire.get("schedule_to_close")),
            retry=mapping_or_empty(wire.get("retry")),
            heartbeat=wire.get("heartbeat"),
        )
    if kind == EventType.ACTIVITY_CANCEL_REQUESTED:
        return RequestActivityCancel(seq=int(wire["seq"]))
    if kind == EventType.TIMER_STARTED:
        return StartTimer(
            timer=str(wire["timer"]),
            purpose=str(wire["purpose"]),
            duration=seconds_or_none(wire.get("duration")) or 0.0,
            fire_at=int(wire["fire_at"]),
            seq=int_or(wire.get("seq"), 0) or None,
            label=wire["label"] if isinstance(wire.get("label"), str) else None,
        )
    if kind == EventType.WORKFLOW_COMPLETED:
        return CompleteWorkflow(wire.get("result"))
    if kind == EventType.WORKFLOW_FAILED:
        return FailWorkflow(mapping_or_empty(wire.get("error")))
    if kind == EventType.WORKFLOW_TIMED_OUT:
        return TimeOutWorkflow(mapping_or_empty(wire.get("error")))
    if kind == EventType.WORKFLOW_CANCELLED:
        return CancelWorkflow()
    if kind == EventType.WORKFLOW_CONTINUED_AS_NEW:
        carried = wire.get("carried")
        return ContinueAsNew(
            list(wire["args"]),
            deadline=int_or(wire.get("deadline"), 0) or None,
            carried=tuple(c for c in carried if isinstance(c, Mapping))
            if isinstance(carried, list)
            else (),
            after=int_or(wire.get("after"), 0),
        )
    if kind == EventType.CHILD_WORKFLOW_SCHEDULED:
        return StartChild(
            seq=int(wire["seq"]),
            workflow=str(wire["workflow"]),
            workflow_id=str(wire["workflow_id"]),
            task_queue=str(wire["task_queue"]),
            args=list(wire["args"]),
            parent_close_policy=str(wire.get("parent_close_policy") or "cancel"),
            execution_timeout=seconds_or_none(wire.get("execution_timeout")),
        )
    if kind == EventType.CHILD_WORKFLOW_SIGNALLED:
        return SignalChild(
            seq=int(wire["seq"]),
            child=int(wire["child"]),
            workflow_id=str(wire["workflow_id"]),
            task_queue=str(wire["task_queue"]),
            name=str(wire["name"]),
            payload=wire.get("payload"),
        )
    if kind == EventType.CHILD_WORKFLOW_CANCEL_REQUESTED:
        return CancelChild(
            child=int(wire["child"]),
            workflow_id=str(wire["workflow_id"]),
            task_queue=str(wire["task_queue"]),
        )
    if kind == EventType.PATCH_RECORDED:
        return RecordPatch(str(wire["patch"]), bool(wire.get("deprecated")))
    raise ValueError(f"{str(kind)!r} is not a command")
