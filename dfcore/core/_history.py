"""The history vocabulary: record and event shapes shared by the engine, workers and client.

A workflow's history is the sequence of JetStream messages on its subject. Each message is one
*record*, a JSON object with a type ``t`` and a timestamp ``ts`` (epoch milliseconds):

* facts, appended by whoever observed them: ``WorkflowStarted`` (client), ``ActivityCompleted`` and
  ``ActivityFailed`` (activity worker), ``TimerFired`` (the server's message scheduler),
  ``SignalReceived`` and ``CancelRequested`` (client), and ``WorkflowTaskFailed`` (workflow
  worker: the code raised a bug; a note for people that replay skips);
* ``Decided``, appended by a workflow worker with the expected-last-subject-sequence check, holding
  the commands (``cmds``) the workflow code produced after the facts before it.

Users see the flattened *event* list: every fact, and every command of every decision.
Writers build records as the typed values of ``_facts`` and commands as those of ``_commands``;
this module checks the shape of what is read (:func:`validate_record`), whoever wrote it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final


class EventType(enum.StrEnum):
    """The type of a history event (``HistoryEvent.type``), as stored in records' ``t``.

    Public: integrations and tools compare against these, never against spelled-out strings.
    Members are strings, so ``event.type == EventType.TIMER_FIRED`` holds for stored events.
    """

    # Facts, appended by whoever observed them
    WORKFLOW_STARTED = "WorkflowStarted"
    ACTIVITY_COMPLETED = "ActivityCompleted"
    ACTIVITY_FAILED = "ActivityFailed"
    TIMER_FIRED = "TimerFired"
    SIGNAL_RECEIVED = "SignalReceived"
    CANCEL_REQUESTED = "CancelRequested"
    #: A note that the workflow's code failed (a bug): for people, ignored by replay.
    WORKFLOW_TASK_FAILED = "WorkflowTaskFailed"
    #: A child this workflow started now has a history (appended by the parent's worker).
    CHILD_WORKFLOW_STARTED = "ChildWorkflowStarted"
    #: A child ended (appended by the child's worker), or could not be started.
    CHILD_WORKFLOW_ENDED = "ChildWorkflowEnded"
    # Commands, inside a Decided record
    ACTIVITY_SCHEDULED = "ActivityScheduled"
    ACTIVITY_CANCEL_REQUESTED = "ActivityCancelRequested"
    TIMER_STARTED = "TimerStarted"
    WORKFLOW_COMPLETED = "WorkflowCompleted"
    WORKFLOW_FAILED = "WorkflowFailed"
    WORKFLOW_CANCELLED = "WorkflowCancelled"
    WORKFLOW_TIMED_OUT = "WorkflowTimedOut"
    CHILD_WORKFLOW_SCHEDULED = "ChildWorkflowScheduled"
    CHILD_WORKFLOW_SIGNALLED = "ChildWorkflowSignalled"
    CHILD_WORKFLOW_CANCEL_REQUESTED = "ChildWorkflowCancelRequested"
    #: The run ended with ``ctx.continue_as_new(...)``: a fresh run of the workflow follows,
    #: under the same id, starting from a history of its own.
    WORKFLOW_CONTINUED_AS_NEW = "WorkflowContinuedAsNew"
    #: Where the code first asked ``ctx.patched(id)`` (or ``deprecate_patch``) and went on
    #: with the new code: a replay answers the question from it.
    PATCH_RECORDED = "PatchRecorded"

    @property
    def is_terminal(self) -> bool:
        """Whether an event of this type ends the workflow."""
        return self.value in TERMINAL_STATUS


# The engine's names for them, plain strings (one definition: the enum above).
WORKFLOW_STARTED: Final = EventType.WORKFLOW_STARTED.value
ACTIVITY_COMPLETED: Final = EventType.ACTIVITY_COMPLETED.value
ACTIVITY_FAILED: Final = EventType.ACTIVITY_FAILED.value
TIMER_FIRED: Final = EventType.TIMER_FIRED.value
SIGNAL_RECEIVED: Final = EventType.SIGNAL_RECEIVED.value
CANCEL_REQUESTED: Final = EventType.CANCEL_REQUESTED.value
WORKFLOW_TASK_FAILED: Final = EventType.WORKFLOW_TASK_FAILED.value
CHILD_WORKFLOW_STARTED: Final = EventType.CHILD_WORKFLOW_STARTED.value
CHILD_WORKFLOW_ENDED: Final = EventType.CHILD_WORKFLOW_ENDED.value
CHILD_WORKFLOW_SCHEDULED: Final = EventType.CHILD_WORKFLOW_SCHEDULED.value
CHILD_WORKFLOW_SIGNALLED: Final = EventType.CHILD_WORKFLOW_SIGNALLED.value
CHILD_WORKFLOW_CANCEL_REQUESTED: Final = EventType.CHILD_WORKFLOW_CANCEL_REQUESTED.value
ACTIVITY_SCHEDULED: Final = EventType.ACTIVITY_SCHEDULED.value
ACTIVITY_CANCEL_REQUESTED: Final = EventType.ACTIVITY_CANCEL_REQUESTED.value
TIMER_STARTED: Final = EventType.TIMER_STARTED.value
WORKFLOW_COMPLETED: Final = EventType.WORKFLOW_COMPLETED.value
WORKFLOW_FAILED: Final = EventType.WORKFLOW_FAILED.value
WORKFLOW_CANCELLED: Final = EventType.WORKFLOW_CANCELLED.value
WORKFLOW_TIMED_OUT: Final = EventType.WORKFLOW_TIMED_OUT.value
PATCH_RECORDED: Final = EventType.PATCH_RECORDED.value
WORKFLOW_CONTINUED_AS_NEW: Final = EventType.WORKFLOW_CONTINUED_AS_NEW.value
# Records only: a decision holding commands; users see its commands, not it.
DECIDED: Final = "Decided"

FACT_TYPES: Final = frozenset(
    {
        WORKFLOW_STARTED,
        ACTIVITY_COMPLETED,
        ACTIVITY_FAILED,
        TIMER_FIRED,
        SIGNAL_RECEIVED,
        CANCEL_REQUESTED,
        WORKFLOW_TASK_FAILED,
        CHILD_WORKFLOW_STARTED,
        CHILD_WORKFLOW_ENDED,
    }
)
COMMAND_TYPES: Final = frozenset(
    {
        ACTIVITY_SCHEDULED,
        ACTIVITY_CANCEL_REQUESTED,
        TIMER_STARTED,
        WORKFLOW_COMPLETED,
        WORKFLOW_FAILED,
        WORKFLOW_CANCELLED,
        WORKFLOW_TIMED_OUT,
        PATCH_RECORDED,
        CHILD_WORKFLOW_SCHEDULED,
        CHILD_WORKFLOW_SIGNALLED,
        CHILD_WORKFLOW_CANCEL_REQUESTED,
        WORKFLOW_CONTINUED_AS_NEW,
    }
)
TERMINAL_STATUS: Final[Mapping[str, str]] = {
    WORKFLOW_COMPLETED: "completed",
    WORKFLOW_FAILED: "failed",
    WORKFLOW_CANCELLED: "cancelled",
    WORKFLOW_TIMED_OUT: "timed_out",
}

# Message headers (plain text, so operators can read them even when bodies are encrypted)
HDR_EVENT: Final = "Df-Event"
HDR_STATUS: Final = "Df-Status"


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the ``ts`` of the records a process appends."""
    return int(time.time() * 1000)


class MalformedRecordError(ValueError):
    """A history message is not a record this engine understands."""


@dataclass(frozen=True)
class Record:
    """One history message: its stream sequence, decoded body, and when the server stored it.

    ``stamp`` (milliseconds since the epoch) is the server's, so no writer can forge it;
    None only for records built in memory (a decision just appended, tests). ``opens``: the
    server's checks prove it is the first record of its history (a start; see
    ``Store.is_first_record``). ``trace``: the trace context a start carried in its headers
    (see ``_observe.trace_headers``); empty on other records.
    """

    seq: int
    body: Mapping[str, Any]
    stamp: int | None = None
    opens: bool = False
    trace: Mapping[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.body["t"])

    @property
    def ts(self) -> int:
        """The writer's own timestamp (shown in histories; not trusted for the clock)."""
        return int(self.body.get("ts", 0))

    @property
    def time_ms(self) -> int:
        """When the record was stored: the server's stamp, the writer's ``ts`` without one."""
        return self.stamp if self.stamp is not None else self.ts

    @property
    def commands(self) -> list[Mapping[str, Any]]:
        return list(self.body.get("cmds", ())) if self.type == DECIDED else []


# The fields each record and command must carry, with their JSON types.
_REQUIRED: Final[Mapping[str, Mapping[str, type | tuple[type, ...]]]] = {
    WORKFLOW_STARTED: {"workflow": str, "args": list},
    ACTIVITY_COMPLETED: {"seq": int, "attempt": int},
    ACTIVITY_FAILED: {"seq": int, "attempt": int},
    TIMER_FIRED: {"timer": str},
    SIGNAL_RECEIVED: {"name": str},
    CANCEL_REQUESTED: {},
    WORKFLOW_TASK_FAILED: {"error": dict},
    CHILD_WORKFLOW_STARTED: {"seq": int, "workflow_id": str},
    CHILD_WORKFLOW_ENDED: {"seq": int, "status": str},
    DECIDED: {"cmds": list},
    ACTIVITY_SCHEDULED: {
        "seq": int,
        "attempt": int,
        "activity": str,
        "args": list,
        "task_queue": str,
    },
    ACTIVITY_CANCEL_REQUESTED: {"seq": int},
    TIMER_STARTED: {"timer": str, "fire_at": int, "purpose": str},
    WORKFLOW_COMPLETED: {},
    WORKFLOW_FAILED: {},
    WORKFLOW_CANCELLED: {},
    WORKFLOW_TIMED_OUT: {},
    PATCH_RECORDED: {"patch": str},
    WORKFLOW_CONTINUED_AS_NEW: {"args": list},
    CHILD_WORKFLOW_SCHEDULED: {
        "seq": int,
        "workflow": str,
        "workflow_id": str,
        "task_queue": str,
        "args": list,
    },
    CHILD_WORKFLOW_SIGNALLED: {
        "seq": int,
        "child": int,
        "workflow_id": str,
        "task_queue": str,
        "name": str,
    },
    CHILD_WORKFLOW_CANCEL_REQUESTED: {"child": int, "workflow_id": str, "task_queue": str},
}


def seconds_or_none(value: Any) -> float | None:
    """An optional duration field as stored: a positive finite number, else None.

    Readers use it for fields the record check does not require, so a forged value is read
    as absent instead of failing every replay.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0 < number < float("inf") else None


def mapping_or_empty(value: Any) -> dict[str, Any]:
    """An optional JSON object field as stored (an error, a retry policy), else ``{}``."""
    return dict(value) if isinstance(value, Mapping) else {}


def int_or(value: Any, default: int) -> int:
    """An optional integer field as stored, else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def validate_record(seq: int, body: Any, stamp: int | None = None) -> Record:
    """Check the shape of a decoded message body and wrap it; raise MalformedRecordError.

    Everything the engine reads from a record is checked here, so a foreign or corrupt
    message is rejected whole instead of failing halfway through a replay. ``stamp``: when the
    server stored it (see :class:`Record`).
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("t"), str):
        raise MalformedRecordError(f"message {seq} is not a history record (no type field)")
    kind = body["t"]
    if kind != DECIDED and kind not in FACT_TYPES:
        raise MalformedRecordError(f"message {seq} has unknown record type {kind!r}")
    ts = body.get("ts", 0)
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise MalformedRecordError(f"message {seq}: {kind} needs 'ts' of type int")
    _check_fields(seq, body)
    if kind == DECIDED:
        for cmd in body["cmds"]:
            if not isinstance(cmd, Mapping) or cmd.get("t") not in COMMAND_TYPES:
                raise MalformedRecordError(f"message {seq} holds an unknown command")
            _check_fields(seq, cmd)
    return Record(seq, body, stamp)


def _check_fields(seq: int, item: Mapping[str, Any]) -> None:
    for name, kind in _REQUIRED[item["t"]].items():
        value = item.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedRecordError(
                f"message {seq}: {item['t']} needs {name!r} of type {_type_name(kind)}"
            )


def _type_name(kind: type | tuple[type, ...]) -> str:
    return kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)


def command_key(cmd: Mapping[str, Any]) -> tuple[Any, ...]:
    """The identity of a command: what a replay matches it by."""
    kind = cmd["t"]
    if kind == ACTIVITY_SCHEDULED:
        return (kind, cmd["seq"], cmd["attempt"])
    if kind == ACTIVITY_CANCEL_REQUESTED:
        return (kind, cmd["seq"])
    if kind == TIMER_STARTED:
        return (kind, cmd["timer"])
    if kind == PATCH_RECORDED:
        return (kind, cmd["patch"])
    if kind in (CHILD_WORKFLOW_SCHEDULED, CHILD_WORKFLOW_SIGNALLED):
        return (kind, cmd["seq"])
    if kind == CHILD_WORKFLOW_CANCEL_REQUESTED:
        return (kind, cmd["child"])
    return (kind,)


def terminal_status(cmds: Iterable[Mapping[str, Any]]) -> str | None:
    """The workflow status a decision's commands end it with, if any."""
    for cmd in cmds:
        status = TERMINAL_STATUS.get(cmd["t"])
        if status:
            return status
    return None


@dataclass(frozen=True)
class HistoryEvent:
    """One row of a workflow's history as users see it (``handle.history()``)."""

    index: int
    stream_seq: int
    type: str  # an EventType's value; compare with EventType members
    time_ms: int
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A one-line description of the event for tables and logs."""
        a = self.attributes
        if self.type == WORKFLOW_STARTED:
            run = f" run={a.get('run')}" if a.get("run") else ""
            return f"{a.get('workflow')}({_args(a)}) queue={a.get('task_queue')}{run}"
        if self.type == WORKFLOW_CONTINUED_AS_NEW:
            return f"({_args(a)})"
        if self.type == ACTIVITY_SCHEDULED:
            return f"#{a.get('seq')} {a.get('activity')}({_args(a)}) attempt={a.get('attempt')}"
        if self.type == ACTIVITY_COMPLETED:
            return f"#{a.get('seq')} attempt={a.get('attempt')} -> {_short(a.get('result'))}"
        if self.type == ACTIVITY_FAILED:
            err = a.get("error") or {}
            head = f"#{a.get('seq')} attempt={a.get('attempt')}"
            return f"{head} {err.get('type')}: {err.get('message')}"
        if self.type in (TIMER_STARTED, TIMER_FIRED):
            what = a.get("label") or a.get("purpose")
            extra = f" {a.get('duration')}s ({what})" if self.type == TIMER_STARTED else ""
            return f"timer {a.get('timer')}{extra}"
        if self.type == SIGNAL_RECEIVED:
            return f"{a.get('name')} {_short(a.get('payload'))}"
        if self.type == CHILD_WORKFLOW_SCHEDULED:
            return f"#{a.get('seq')} {a.get('workflow')}({_args(a)}) id={a.get('workflow_id')}"
        if self.type == CHILD_WORKFLOW_STARTED:
            return f"#{a.get('seq')} {a.get('workflow_id')}"
        if self.type == CHILD_WORKFLOW_ENDED:
            return f"#{a.get('seq')} {a.get('status')}"
        if self.type == PATCH_RECORDED:
            return f"{a.get('patch')}" + (" (deprecated)" if a.get("deprecated") else "")
        if self.type == WORKFLOW_COMPLETED:
            return _short(a.get("result"))
        if self.type in (WORKFLOW_FAILED, WORKFLOW_TIMED_OUT, WORKFLOW_TASK_FAILED):
            err = a.get("error") or {}
            return f"{err.get('type')}: {err.get('message')}"
        return ""


def flatten(records: Iterable[Record]) -> list[HistoryEvent]:
    """Turn records into the user-visible event list (decisions expand into their commands)."""
    events: list[HistoryEvent] = []
    for record in records:
        items = record.commands if record.type == DECIDED else [record.body]
        for item in items:
            attrs = {k: v for k, v in item.items() if k not in ("t", "ts")}
            events.append(HistoryEvent(len(events) + 1, record.seq, item["t"], record.ts, attrs))
    return events


def _args(attrs: Mapping[str, Any]) -> str:
    parts = [_short(v) for v in attrs.get("args") or ()]
    parts += [f"{k}={_short(v)}" for k, v in (attrs.get("kwargs") or {}).items()]
    return ", ".join(parts)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- commands on replay ---------------------------------------------------------------------


def is_user_command(cmd: Mapping[str, Any]) -> bool:
    """Commands whose seq comes from workflow code (and so must match on replay)."""
    if cmd["t"] == ACTIVITY_SCHEDULED:
        return int(cmd["attempt"]) == 1
    if cmd["t"] in (CHILD_WORKFLOW_SCHEDULED, CHILD_WORKFLOW_SIGNALLED):
        return True
    return cmd["t"] == TIMER_STARTED and cmd.get("purpose") == "timer"


def same_command(recorded: Mapping[str, Any], produced: Mapping[str, Any]) -> bool:
    """Whether replayed code asked for what the history recorded."""
    same_key = command_key(recorded) == command_key(produced)
    same_activity = recorded.get("activity") == produced.get("activity")
    return same_key and same_activity and recorded.get("workflow") == produced.get("workflow")


def command_step(cmd: Mapping[str, Any]) -> int:
    """The seq a command belongs to (0 for a workflow's end)."""
    return int(cmd.get("seq", 0))


def describe_command(cmd: Mapping[str, Any]) -> str:
    """A command in words, for non-determinism messages."""
    kind = cmd.get("t")
    if kind == ACTIVITY_SCHEDULED:
        return f"activity {cmd.get('activity')!r} (attempt {cmd.get('attempt')})"
    if kind == TIMER_STARTED:
        return f"a {cmd.get('duration')}s timer ({cmd.get('purpose')})"
    if isinstance(kind, str) and kind in TERMINAL_STATUS:
        return f"workflow end ({TERMINAL_STATUS[kind]})"
    if kind == ACTIVITY_CANCEL_REQUESTED:
        return f"cancellation of activity #{cmd.get('seq')}"
    if kind == PATCH_RECORDED:
        return f"patch {cmd.get('patch')!r}"
    if kind == CHILD_WORKFLOW_SCHEDULED:
        return f"child workflow {cmd.get('workflow')!r} ({cmd.get('workflow_id')})"
    if kind == CHILD_WORKFLOW_SIGNALLED:
        return f"signal {cmd.get('name')!r} to child #{cmd.get('child')}"
    if kind == CHILD_WORKFLOW_CANCEL_REQUESTED:
        return f"cancellation of child #{cmd.get('child')}"
    if kind == WORKFLOW_CONTINUED_AS_NEW:
        return "continue-as-new"
    return str(kind)
