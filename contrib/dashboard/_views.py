"""What the JSON API says of workflows: summaries, a workflow read from its history, its
events and its timeline (each activity attempt, timer and child a bar; signals points)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dfcore import (
    DeadLetter,
    EventType,
    HistoryEvent,
    QueueInfo,
    WorkerInfo,
    WorkflowSummary,
)

E = EventType
_ENDINGS = {
    E.WORKFLOW_COMPLETED: "completed",
    E.WORKFLOW_FAILED: "failed",
    E.WORKFLOW_CANCELLED: "cancelled",
    E.WORKFLOW_TIMED_OUT: "timed_out",
}
MAX_DATA = 4096  # bytes of a dead letter's body shown


def iso(when: datetime | int | None) -> str | None:
    """A time as the API writes it (ISO 8601, UTC, milliseconds); ints are epoch ms."""
    if when is None or when == 0:
        return None
    if isinstance(when, int):
        when = datetime.fromtimestamp(when / 1000, tz=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_json(entry: WorkflowSummary) -> dict[str, Any]:
    return {
        "workflow_id": entry.workflow_id,
        "workflow_type": entry.workflow_type,
        "task_queue": entry.task_queue,
        "status": entry.status,
        "run": entry.run,
        "started_at": iso(entry.started_at),
        "ended_at": iso(entry.ended_at),
        "parent_id": entry.parent_id,
        "schedule_id": entry.schedule_id,
        "failure": entry.failure,
    }


def event_json(event: HistoryEvent) -> dict[str, Any]:
    return {
        "index": event.index,
        "seq": event.stream_seq,
        "time": iso(event.time_ms),
        "type": event.type,
        "summary": event.summary(),
        "details": dict(event.attributes),
    }


@dataclass
class WorkflowView:
    """A workflow as its history tells it (the workflow page)."""

    workflow_id: str
    events: list[HistoryEvent]
    status: str = "running"
    workflow_type: str | None = None
    task_queue: str | None = None
    run: int = 1
    started_ms: int | None = None
    ended_ms: int | None = None
    parent_id: str | None = None
    schedule_id: str | None = None
    args: list[Any] | None = None
    result: Any = None
    failure: dict[str, Any] | None = None
    recurring_error: dict[str, Any] | None = None
    spans: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, workflow_id: str, events: list[HistoryEvent]) -> WorkflowView:
        view = cls(workflow_id, events)
        for event in events:
            view._apply(event)
        last = events[-1] if events else None
        if view.status == "running" and last is not None and last.type == E.WORKFLOW_TASK_FAILED:
            view.status = "failing"
            view.recurring_error = _error(last.attributes)
        view.spans = timeline(events)
        return view

    def _apply(self, event: HistoryEvent) -> None:
        a = event.attributes
        if event.type == E.WORKFLOW_STARTED:
            self.workflow_type = _text(a.get("workflow"))
            self.task_queue = _text(a.get("task_queue"))
            self.run = int(a.get("run") or 1)
            self.started_ms = event.time_ms
            self.args = list(a.get("args") or [])
            parent = a.get("parent")
            self.parent_id = _text(parent.get("workflow_id")) if isinstance(parent, dict) else None
            self.schedule_id = _text(a.get("schedule"))
        elif event.type in _ENDINGS and self.ended_ms is None:
            self.status, self.ended_ms = _ENDINGS[E(event.type)], event.time_ms
            if event.type == E.WORKFLOW_COMPLETED:
                self.result = a.get("result")
            elif a.get("error"):
                self.failure = _error(a)

    def summary(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "workflow_type": self.workflow_type,
            "task_queue": self.task_queue,
            "status": self.status,
            "run": self.run,
            "started_at": iso(self.started_ms),
            "ended_at": iso(self.ended_ms),
            "parent_id": self.parent_id,
            "schedule_id": self.schedule_id,
        }

    def to_json(self, *, with_events: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "summary": self.summary(),
            "args": self.args,
            "kwargs": None,
            "args_hidden": False,
            "result": self.result,
            "failure": self.failure,
            "recurring_error": self.recurring_error,
            "timeline": self.spans,
            "history_seq": self.events[-1].stream_seq if self.events else 0,
        }
        if with_events:
            body["events"] = [event_json(event) for event in self.events]
        return body


def timeline(events: Iterable[HistoryEvent]) -> list[dict[str, Any]]:
    """The bars and points of a history, in the order they began."""
    spans: list[dict[str, Any]] = []
    open_: dict[tuple[str, Any], dict[str, Any]] = {}

    def begin(key: tuple[str, Any], span: dict[str, Any]) -> None:
        spans.append(span)
        open_[key] = span

    def finish(key: tuple[str, Any], at: int, outcome: str, error: str | None = None) -> None:
        span = open_.pop(key, None)
        if span is not None:
            span.update(end=iso(at), outcome=outcome, error=error)

    for event in events:
        a, at, kind = event.attributes, event.time_ms, event.type
        if kind == E.ACTIVITY_SCHEDULED:
            name, seq, attempt = _text(a.get("activity")), a.get("seq"), a.get("attempt")
            label = f"{name} #{seq} attempt {attempt}"
            begin(("activity", (seq, attempt)), _span("activity", label, at, name, seq, attempt))
        elif kind in (E.ACTIVITY_COMPLETED, E.ACTIVITY_FAILED):
            key = ("activity", (a.get("seq"), a.get("attempt")))
            failed = kind == E.ACTIVITY_FAILED
            finish(key, at, "failed" if failed else "completed", _error_text(a) if failed else None)
        elif kind == E.TIMER_STARTED:
            what = _text(a.get("label")) or _text(a.get("purpose")) or "timer"
            label = f"{what} {a.get('duration')}s"
            begin(("timer", a.get("timer")), _span("timer", label, at, what, a.get("seq")))
        elif kind == E.TIMER_FIRED:
            finish(("timer", a.get("timer")), at, "fired")
        elif kind == E.CHILD_WORKFLOW_SCHEDULED:
            child = _text(a.get("workflow_id"))
            span = _span("child", f"{a.get('workflow')} {child}", at, _text(a.get("workflow")))
            span.update(seq=a.get("seq"), child_id=child)
            begin(("child", a.get("seq")), span)
        elif kind == E.CHILD_WORKFLOW_ENDED:
            finish(("child", a.get("seq")), at, str(a.get("status")), _error_text(a))
        elif kind in (E.SIGNAL_RECEIVED, E.CANCEL_REQUESTED, E.WORKFLOW_TASK_FAILED):
            point = {
                E.SIGNAL_RECEIVED: ("signal", f"signal {a.get('name')}", "received"),
                E.CANCEL_REQUESTED: ("cancel", "cancel requested", "received"),
                E.WORKFLOW_TASK_FAILED: ("workflow_task_failed", "workflow task failed", "failed"),
            }[E(kind)]
            span = _span(point[0], point[1], at, _text(a.get("name")))
            span.update(end=span["start"], outcome=point[2], error=_error_text(a))
            spans.append(span)
    return spans


def _span(
    kind: str, label: str, at: int, name: str | None, seq: Any = None, attempt: Any = None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "label": label,
        "name": name,
        "seq": seq,
        "attempt": attempt,
        "start": iso(at),
        "end": None,
        "outcome": "running",
        "child_id": None,
        "error": None,
    }


def _error(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    error = attributes.get("error")
    if not isinstance(error, dict):
        return None
    return {
        "type": _text(error.get("type")),
        "message": _text(error.get("message")),
        "traceback": _text(error.get("traceback")),
    }


def _error_text(attributes: Mapping[str, Any]) -> str | None:
    error = _error(attributes)
    return f"{error['type']}: {error['message']}" if error else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- the rest of what the API shows ----------------------------------------------------------


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    data = letter.data[:MAX_DATA].decode("utf-8", errors="replace")
    return {
        "seq": letter.seq,
        "time": iso(letter.time),
        "source": letter.source,
        "subject": letter.subject,
        "reason": letter.reason,
        "headers": dict(letter.headers),
        "data": data,
        "size": letter.size,
        "truncated": letter.truncated or len(letter.data) > MAX_DATA,
    }


def worker_json(worker: WorkerInfo, *, alive: bool, last_seen: datetime) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.app,
        "host": worker.host,
        "pid": worker.pid,
        "version": worker.version,
        "workflow_queues": list(worker.workflow_queues),
        "activity_queues": list(worker.activity_queues),
        "running": [
            {
                "workflow_id": r.workflow_id,
                "activity": r.activity,
                "seq": r.seq,
                "attempt": r.attempt,
                "since": iso(r.since),
            }
            for r in worker.running
        ],
        "running_count": worker.running_count,
        "cached_workflows": worker.cached_workflows,
        "started_at": iso(worker.started_at),
        "last_seen": iso(last_seen),
        "alive": alive,
    }


def queue_json(queue: QueueInfo) -> dict[str, Any]:
    return {
        "name": queue.name,
        "activity_backlog": queue.activity_backlog,
        "activity_in_flight": queue.activity_in_flight,
        "workflow_backlog": queue.workflow_backlog,
        "workflow_in_flight": queue.workflow_in_flight,
        "starts_waiting": queue.starts_waiting,
    }
