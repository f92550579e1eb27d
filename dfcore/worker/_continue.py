"""Continue-as-new: a run ends, and the workflow starts afresh under its id, on its subject.

Each run's history starts on the same subject, so clients keep signalling, cancelling and
awaiting the workflow by its id alone. The next run's start is appended with a rollup: as the
server stores it, it deletes every record before it, so the history a worker replays holds one
run only, however long the workflow has been going. Before that the run's records are copied
to their runs subject (``Store.runs.keep``), where ``handle.history(run=N)`` finds them.

Facts may reach the history between the decision and the next start. Signals and cancellations
are carried in the start (they are meant for whoever runs then); answers to the ending run's
commands (a late activity result) are not, and any that come later name their run, which the
next run ignores. Every step is idempotent: a decision carried out again after a crash finds
its run already copied (the copy's message ids) or already continued (the start's run number).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from dfcore.core import _history as h
from dfcore.core._commands import ContinueAsNew
from dfcore.core._errors import DFError, PayloadTooLargeError
from dfcore.core._facts import WorkflowStarted, run_of
from dfcore.core._logfields import log_fields
from dfcore.jetstream._naming import workflow_token
from dfcore.jetstream._requests import AppendConflict
from dfcore.worker._indexing import index_change
from dfcore.worker._storage import WorkerStore

log = logging.getLogger("dfcore.worker")

_CARRIED = (h.SIGNAL_RECEIVED, h.CANCEL_REQUESTED)
_TRIES = 50  # appends of the next start that a busy history may refuse before giving up


async def continue_as_new(
    store: WorkerStore, subject: str, decision: h.Record, command: ContinueAsNew
) -> None:
    """Carry out the ``ContinueAsNew`` command of ``decision``: keep the run, start the next."""
    records, seen = await store.read(subject)
    first = records[0] if records else None
    if first is not None and first.seq > decision.seq:
        return  # carried out already: the next run's start rolled this run up
    if first is None or first.type != h.WORKFLOW_STARTED or decision.seq not in seqs(records):
        # A replica that does not hold the decision yet answered: try again shortly.
        raise DFError(f"the read of {subject} lags behind its decision {decision.seq}")
    ending = WorkflowStarted.from_wire(first.body)
    run = run_of(first.body)
    await store.runs.keep(subject, run, [r for r in records if r.seq <= decision.seq])
    if (await store.first(subject) or first).seq > decision.seq:
        return  # another worker carried it out meanwhile: its next run's timers are not ours
    await store.purge_run_timers(subject, run)
    ended_at = command.after or decision.seq  # what came later, the run did not see
    carried = [*command.carried]
    carried += [r.body for r in records if r.seq > ended_at and r.type in _CARRIED]
    workflow_id = store.layout.parse_history_subject(subject)[1]
    token = workflow_token(workflow_id)
    for _ in range(_TRIES):
        start = WorkflowStarted(
            ending.workflow,
            command.args,
            ending.task_queue,
            _next_run_id(ending.run_id, run + 1),
            parent=ending.parent,
            run=run + 1,
            deadline=command.deadline,
            carried=tuple(carried),
            schedule=ending.schedule,
        )
        data = _fitting(store, start, subject)
        try:
            await store.append(
                subject,
                start.to_wire(),
                msg_id=f"{token}:run:{run + 1}",
                expected_seq=seen,
                rollup=True,
                data=data,
                trace=first.trace,  # the next run goes on in its workflow's trace
            )
        except AppendConflict:  # a fact came meanwhile: carry it too if it is for the next run
            later, seen = await store.read(subject, seen)
            if any(r.type == h.WORKFLOW_STARTED for r in later):
                return  # another worker started the next run meanwhile
            carried += [r.body for r in later if r.type in _CARRIED]
            continue
        await index_change(store, subject, run=run + 1)
        log.info(
            "workflow %s[%s] continued as new (run %d)",
            ending.workflow,
            workflow_id,
            run + 1,
            extra=log_fields(workflow_id, run=run + 1, workflow_type=ending.workflow),
        )
        return
    raise DFError(f"could not continue {subject} as new: it kept changing through {_TRIES} tries")


def _fitting(store: WorkerStore, start: WorkflowStarted, subject: str) -> bytes:
    """The start encoded; the oldest carried signals are dropped if they make it too big."""
    carried = list(start.carried)
    while True:
        try:
            return store.encode(start.to_wire(), "the next run's start")
        except PayloadTooLargeError:
            if not carried:
                raise
            dropped = max(1, len(carried) // 4)
            workflow_id = store.layout.parse_history_subject(subject)[1]
            fields = log_fields(workflow_id, run=start.run, workflow_type=start.workflow)
            log.warning(
                "%s: %d signals dropped: the next run's start must fit",
                subject,
                dropped,
                extra=fields,
            )
            carried = carried[dropped:]
            start = dataclasses.replace(start, carried=tuple(carried))


def seqs(records: list[h.Record]) -> set[int]:
    return {record.seq for record in records}


def _next_run_id(run_id: str, run: int) -> str:
    """The same on every attempt, so the start carried out twice is the same record."""
    return hashlib.sha256(f"{run_id}\0run {run}".encode()).hexdigest()[:32]
