"""What workers tell the app's observers: a workflow task whose decision was appended, and
each activity attempt."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._activity import ActivityInfo
from dfcore.core._engine import WorkflowRun
from dfcore.core._facts import ActivityCompleted, ActivityFailed
from dfcore.core._observe import (
    AttemptObservation,
    AttemptOutcome,
    CacheOutcome,
    ObservedAttempt,
    ObservedInput,
    ObservedTask,
    Observers,
    trace_headers,
)
from dfcore.core._run_state import TimerState
from dfcore.core._tasks import ActivityTask
from dfcore.jetstream._stamps import delivery_stamp

log = logging.getLogger("dfcore.worker")


@dataclass
class TaskWork:
    """One workflow task as the worker does it: when it began, what the cache held, how many
    of its appends were refused."""

    began_ns: int = field(default_factory=time.time_ns)
    cache: CacheOutcome = "hit"
    conflicts: int = 0


def tell_decided(
    observers: Observers,
    run: WorkflowRun,
    work: TaskWork,
    seq: int,
    body: Mapping[str, Any],
    status: str | None,
) -> dict[str, str]:
    """Tell the observers of an appended decision (before it is applied to ``run``, whose
    inputs it answers); the trace headers for the work it starts."""
    info = run.info
    cmds = body["cmds"]
    if status is None and any(c["t"] == h.WORKFLOW_CONTINUED_AS_NEW for c in cmds):
        status = "continued"
    failure = next((_failure(c) for c in cmds if c["t"] == h.WORKFLOW_FAILED), None)
    task = ObservedTask(
        workflow_id=info.workflow_id,
        workflow_type=info.workflow_type,
        run=info.run,
        task_queue=info.task_queue,
        seq=seq,
        trace=info.trace,
        began_ns=work.began_ns,
        ended_ns=time.time_ns(),
        cache=work.cache,
        conflicts=work.conflicts,
        inputs=tuple(_input(run, record) for record in run.inputs),
        commands=tuple(str(c["t"]) for c in cmds),
        status=status,
        started_ms=info.start_time_ms,
        failure=failure,
    )
    return observers.workflow_task(task)


def _input(run: WorkflowRun, record: h.Record) -> ObservedInput:
    body, at = record.body, record.time_ms
    kind = record.type
    if kind == h.TIMER_FIRED:
        timer = run.timer(str(body.get("timer")))
        name = _timer_name(timer) if timer is not None else str(body.get("timer"))
        return ObservedInput("timer", name, at, timer.started_ms if timer else None)
    if kind == h.SIGNAL_RECEIVED:
        return ObservedInput("signal", str(body.get("name")), at, _int(body.get("ts")))
    if kind in (h.ACTIVITY_COMPLETED, h.ACTIVITY_FAILED):
        call = run.activities.get(int(body.get("seq", 0)))
        name = call.name if call is not None else "activity"
        return ObservedInput("activity", name, at, failed=kind == h.ACTIVITY_FAILED)
    if kind == h.CANCEL_REQUESTED:
        return ObservedInput(
            "cancel", str(body.get("reason") or "cancel"), at, _int(body.get("ts"))
        )
    if kind in (h.CHILD_WORKFLOW_STARTED, h.CHILD_WORKFLOW_ENDED):
        child = run.children.get(int(body.get("seq", 0)))
        name = child.workflow_id if child is not None else str(body.get("workflow_id", ""))
        failed = kind == h.CHILD_WORKFLOW_ENDED and body.get("status") != "completed"
        return ObservedInput("child", name, at, failed=failed)
    return ObservedInput("start", run.info.workflow_type, at)


def _timer_name(timer: TimerState) -> str:
    """What a timer is for: its label, ``sleep`` for the code's own, else its purpose
    (``retry``: an activity's backoff)."""
    return timer.label or ("sleep" if timer.purpose == "timer" else timer.purpose)


def _failure(cmd: Mapping[str, Any]) -> str:
    error = cmd.get("error") or {}
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def observe_attempt(
    observers: Observers, info: ActivityInfo, task: ActivityTask, msg: Msg
) -> list[AttemptObservation]:
    """Tell the observers an attempt is about to run; what they hold for it."""
    attempt = ObservedAttempt(
        workflow_id=info.workflow_id,
        activity=info.activity,
        attempt=info.attempt,
        task_queue=task.task_queue,
        trace=trace_headers(msg.headers),
        scheduled_ms=delivery_stamp(msg) or 0,
        run=task.run,
        seq=info.seq,
    )
    return observers.activity_attempt(attempt)


def end_attempt(
    watchers: list[AttemptObservation],
    outcome: ActivityCompleted | ActivityFailed,
    raised: BaseException | None,
) -> None:
    kind: AttemptOutcome = "completed"
    if isinstance(outcome, ActivityFailed):
        if outcome.error.get("timeout"):
            kind = "timed_out"
        elif outcome.error.get("type") == "CancelledError":
            kind = "cancelled"
        else:
            kind = "failed"
    for watcher in watchers:
        try:
            watcher.end(kind, raised)
        except Exception:
            log.exception("observer %r: end() raised; the engine goes on without it", watcher)
