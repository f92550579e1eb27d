"""Carrying out a decision: the work each command asks for, published idempotently.

Every message has a deterministic id (from the workflow, its run and the step), so a decision
carried out twice, by a worker that died halfway or by the one its message is redelivered to,
publishes nothing new. ``run`` is the workflow's cached run, or None when the decision is
carried out by a worker that does not hold it (then its record says which run decided).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from dfcore.core import _history as h
from dfcore.core._commands import (
    CancelChild,
    ContinueAsNew,
    RequestActivityCancel,
    ScheduleActivity,
    SignalChild,
    StartChild,
    StartTimer,
    command_from_wire,
)
from dfcore.core._engine import WorkflowRun
from dfcore.core._facts import WorkflowStarted, run_of
from dfcore.core._logfields import log_fields
from dfcore.core._run_state import RunInfo
from dfcore.core._tasks import ActivityTask
from dfcore.jetstream._naming import run_token
from dfcore.worker._children import cancel_child, report_to_parent, signal_child, start_child
from dfcore.worker._continue import continue_as_new
from dfcore.worker._schedules import send_ended
from dfcore.worker._storage import WorkerStore


async def dispatch(
    store: WorkerStore,
    workflow_id: str,
    subject: str,
    run: WorkflowRun | None,
    record: h.Record,
    trace: Mapping[str, str],
) -> None:
    """Publish the work of every command of decision ``record``.

    Children are started first, so a cancellation or signal beside them finds them; the next
    run of a workflow that continues as new is started last, once the rest is out. Activity
    tasks and children's starts carry ``trace`` in their headers.
    """
    cmds = record.commands
    number = run.info.run if run is not None else run_of(record.body)

    async def each(kinds: set[str], inside: bool) -> None:
        chosen = [c for c in cmds if (c["t"] in kinds) == inside]
        await asyncio.gather(
            *(
                _dispatch_one(store, workflow_id, subject, run, number, record, c, trace)
                for c in chosen
            )
        )

    ordered = {h.CHILD_WORKFLOW_SCHEDULED, h.WORKFLOW_CONTINUED_AS_NEW}
    if any(c["t"] in ordered for c in cmds):
        await each({h.CHILD_WORKFLOW_SCHEDULED}, True)
        await each(ordered, False)
        await each({h.WORKFLOW_CONTINUED_AS_NEW}, True)
    else:
        await each(set(), False)


async def report_end(
    store: WorkerStore, subject: str, decision: h.Record, info: RunInfo | None
) -> None:
    """A workflow ended with ``decision``: tell the parent and the schedule that started it,
    if any. ``info``: the run's, when it is cached; else its start is read."""
    _, workflow_id = store.layout.parse_history_subject(subject)
    if info is None:
        first = await store.first(subject)
        if first is None or first.type != h.WORKFLOW_STARTED:
            return
        start = WorkflowStarted.from_wire(first.body)
        parent, schedule = start.parent, start.schedule
        fields = log_fields(workflow_id, run=start.run, workflow_type=start.workflow)
    else:
        parent, schedule, fields = info.parent, info.schedule, log_fields(info)
    if parent is not None:
        await report_to_parent(store, decision, parent, fields)
    if schedule is not None:
        await send_ended(store, schedule, workflow_id, fields=fields)


async def _dispatch_one(
    store: WorkerStore,
    workflow_id: str,
    subject: str,
    run: WorkflowRun | None,
    number: int,
    decision: h.Record,
    cmd: Mapping[str, Any],
    trace: Mapping[str, str],
) -> None:
    command = command_from_wire(cmd)
    decision_seq = decision.seq
    kind = run.info.workflow_type if run is not None else ""  # the run's, when cached here
    if isinstance(command, ScheduleActivity):
        call = run.activity(command.seq) if run is not None else None
        if call is not None and (call.done or call.attempt != command.attempt):
            return
        task = ActivityTask.scheduled(workflow_id, subject, decision_seq, command, number, kind)
        msg_id = f"{run_token(workflow_id, number)}:{task.seq}:{task.attempt}"
        await store.publish_task(task.task_queue, task.to_wire(), msg_id, trace)
    elif isinstance(command, StartTimer):
        timer = run.timer(command.timer) if run is not None else None
        if (timer is not None and timer.fired) or (run is not None and run.closed):
            return
        await store.schedule_timer(subject, command.timer, command.fire_at, number)
    elif isinstance(command, RequestActivityCancel):
        cancel_subject = store.layout.activity_cancel_subject(workflow_id)
        await store.nc.publish(cancel_subject, orjson.dumps({"seq": command.seq}))
    elif isinstance(command, StartChild):
        child = run.children.get(command.seq) if run is not None else None
        if child is None or not child.started.done():
            await start_child(store, workflow_id, subject, decision_seq, command, number, trace)
    elif isinstance(command, SignalChild):
        await signal_child(store, workflow_id, subject, command, number, kind)
    elif isinstance(command, CancelChild):
        await cancel_child(store, workflow_id, subject, command, number)
    elif isinstance(command, ContinueAsNew):
        await continue_as_new(store, subject, decision, command)  # its start's trace goes on
