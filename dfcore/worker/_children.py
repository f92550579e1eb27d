"""What a workflow worker does for child workflows: starts them, passes on signals and
cancellations, and reports a child's end to its parent.

Every step is idempotent, so a decision carried out again after a crash (its message
redelivered) changes nothing: the child's history is made once (a start is allowed only on an
empty history, and is recognised as ours by its parent pointer), and each fact appended to the
parent or the child has a deterministic message id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from dfcore.core import _history as h
from dfcore.core._commands import CancelChild, SignalChild, StartChild
from dfcore.core._errors import WorkflowNotFoundError
from dfcore.core._facts import (
    CancelRequested,
    ChildWorkflowEnded,
    ChildWorkflowStarted,
    Parent,
    SignalReceived,
    WorkflowStarted,
)
from dfcore.core._logfields import log_fields
from dfcore.jetstream._index import started_entry
from dfcore.jetstream._naming import run_token, workflow_token
from dfcore.jetstream._requests import AppendConflict
from dfcore.worker._storage import WorkerStore

log = logging.getLogger("dfcore.worker")


async def start_child(
    store: WorkerStore,
    parent_id: str,
    parent_subject: str,
    decision_seq: int,
    cmd: StartChild,
    run: int = 1,
    trace: Mapping[str, str] | None = None,
) -> None:
    """Make the child's history, then tell the parent (its run ``run``) it runs, or that it
    cannot. The child's start carries ``trace``: the parent's decision's."""
    parent = Parent(parent_id, parent_subject, cmd.seq, run)
    run_id = _child_run_id(parent_id, cmd.seq, run)
    start = WorkflowStarted(
        cmd.workflow,
        cmd.args,
        cmd.task_queue,
        run_id,
        execution_timeout=cmd.execution_timeout,
        parent=parent,
    )
    lay = store.layout
    child = cmd.workflow_id
    token = run_token(parent_id, run)
    try:
        await store.append(
            lay.history_subject(cmd.task_queue, child),
            start.to_wire(),
            msg_id=f"{workflow_token(child)}:child-of:{token}:{cmd.seq}",
            expected_seq=0,
            expected_subject=lay.history_any_queue(child),
            trace=trace,
        )
    except AppendConflict:
        if not await _ours(store, child, parent):
            error = {
                "type": "WorkflowAlreadyStartedError",
                "message": f"a workflow with id {child!r} already exists and is not this "
                "parent's child: give the child another workflow_id",
            }
            ended = ChildWorkflowEnded(cmd.seq, "not_started", error=error, run=run)
            msg_id = f"{token}:child:{cmd.seq}:ended"
            await store.append_fact(
                parent_subject, ended.to_wire(), msg_id=msg_id, after_seq=decision_seq
            )
            return
    await store.index.write(started_entry(child, start.to_wire()), first=True)  # once
    fact = ChildWorkflowStarted(cmd.seq, child, run_id, run=run)
    msg_id = f"{token}:child:{cmd.seq}:started"
    await store.append_fact(parent_subject, fact.to_wire(), msg_id=msg_id, after_seq=decision_seq)


async def signal_child(
    store: WorkerStore,
    parent_id: str,
    parent_subject: str,
    cmd: SignalChild,
    run: int = 1,
    workflow_type: str = "",
) -> None:
    """Signal the child, if the workflow under its id is this parent's child
    (``workflow_type``: the parent's, for the log lines, when known)."""
    fields = log_fields(parent_id, run=run, workflow_type=workflow_type)
    if not await _ours(store, cmd.workflow_id, Parent(parent_id, parent_subject, cmd.child, run)):
        log.warning(
            "workflow %s: %s is not its child; signal not sent",
            parent_id,
            cmd.workflow_id,
            extra=fields,
        )
        return
    subject = store.layout.history_subject(cmd.task_queue, cmd.workflow_id)
    body = SignalReceived(cmd.name, cmd.payload).to_wire()
    msg_id = f"{run_token(parent_id, run)}:child-signal:{cmd.seq}"
    try:
        await store.append_fact(subject, body, msg_id=msg_id, after_seq=0)
    except WorkflowNotFoundError:
        log.warning(
            "workflow %s: child %s is gone; signal not sent",
            parent_id,
            cmd.workflow_id,
            extra=fields,
        )


async def cancel_child(
    store: WorkerStore, parent_id: str, parent_subject: str, cmd: CancelChild, run: int = 1
) -> None:
    """Cancel the child, if the workflow under its id is this parent's child (an id given in
    code may belong to another workflow, whose start then failed)."""
    if not await _ours(store, cmd.workflow_id, Parent(parent_id, parent_subject, cmd.child, run)):
        return  # not started (or not ours): nothing to cancel
    subject = store.layout.history_subject(cmd.task_queue, cmd.workflow_id)
    body = CancelRequested(f"its parent {parent_id!r} asked").to_wire()
    msg_id = f"{workflow_token(cmd.workflow_id)}:cancel"
    try:
        await store.append_fact(subject, body, msg_id=msg_id, after_seq=0)
    except WorkflowNotFoundError:
        pass  # never started (or removed): nothing to cancel


async def report_to_parent(
    store: WorkerStore, decision: h.Record, parent: Parent, fields: Mapping[str, Any]
) -> None:
    """A workflow ended with ``decision``: append its end to the parent that started it
    (``fields``: the ended workflow's, for the log lines)."""
    try:  # a start names its parent, and anyone may start: only a parent's history will do
        _, named = store.layout.parse_history_subject(parent.history)
    except ValueError:
        named = None
    if named != parent.workflow_id:
        log.warning("ignoring the parent a workflow's start names: %s", parent, extra=fields)
        return
    ended = dataclasses.replace(_ending(parent.seq, decision.commands), run=parent.run)
    msg_id = f"{run_token(parent.workflow_id, parent.run)}:child:{parent.seq}:ended"
    try:
        await store.append_fact(parent.history, ended.to_wire(), msg_id=msg_id, after_seq=0)
    except WorkflowNotFoundError:
        log.warning(
            "child workflow's parent %s is gone; its end is not reported", parent, extra=fields
        )


def _ending(seq: int, cmds: list[Mapping[str, Any]]) -> ChildWorkflowEnded:
    for cmd in cmds:
        kind = cmd["t"]
        if kind == h.WORKFLOW_COMPLETED:
            return ChildWorkflowEnded(seq, "completed", result=cmd.get("result"))
        if kind in (h.WORKFLOW_FAILED, h.WORKFLOW_TIMED_OUT):
            error = cmd.get("error") or {}
            brief = {"type": error.get("type", "Error"), "message": error.get("message", "")}
            return ChildWorkflowEnded(seq, h.TERMINAL_STATUS[kind], error=brief)
    error = {"type": "CancelledError", "message": "the child workflow was cancelled"}
    return ChildWorkflowEnded(seq, "cancelled", error=error)


async def _ours(store: WorkerStore, child: str, parent: Parent) -> bool:
    """Whether the history that exists for ``child`` was started by this parent's call."""
    subject = await store.started_subject(child)
    first = await store.first(subject) if subject is not None else None
    if first is None:
        return False
    return Parent.from_wire(first.body.get("parent")) == parent


def _child_run_id(parent_id: str, seq: int, run: int) -> str:
    """The same on every attempt, so a start carried out twice writes the same record."""
    of_run = f"\0{run}" if run > 1 else ""
    return hashlib.sha256(f"{parent_id}\0{seq}{of_run}".encode()).hexdigest()[:32]
