"""The worker's writes to the workflow index (see ``dfcore/jetstream/_index.py``): a workflow
that fails, gets past the failure, continues as new, or ends."""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

from dfcore.core import _history as h
from dfcore.core._errors import DFError
from dfcore.core._logfields import log_fields
from dfcore.core._run_state import RunInfo
from dfcore.jetstream._index import WorkflowSummary, ended_entry, started_entry
from dfcore.worker._storage import WorkerStore

log = logging.getLogger("dfcore.worker")


async def index_end(
    store: WorkerStore, history_subject: str, decision: h.Record, info: RunInfo | None
) -> None:
    """Record the end of a workflow in its entry, which then expires with its history.

    A first run's cached state says all the entry holds, so nothing is read; a later run's
    entry keeps its first run's start time (read from the entry).
    """
    status = h.terminal_status(decision.commands)
    if status is None:
        return
    queue, workflow_id = store.layout.parse_history_subject(history_subject)
    entry: WorkflowSummary | None
    if info is not None and info.run == 1:
        entry = WorkflowSummary(
            workflow_id,
            queue,
            "running",
            workflow_type=info.workflow_type,
            started_at=_when(info.start_time_ms),
            parent_id=info.parent.workflow_id if info.parent is not None else None,
            schedule_id=info.schedule,
        )
    else:
        entry = await _current(store, history_subject)
        if entry is None:
            return
    ended_at = decision.time_ms or int(time.time() * 1000)
    await store.index.write(ended_entry(entry, status, decision.commands, ended_at))


async def index_change(store: WorkerStore, history_subject: str, **changes: Any) -> None:
    """Change a running workflow's entry (its status, failure or run); best effort: the
    entry is for people, and a failure to write it is logged, not raised."""
    try:
        entry = await _current(store, history_subject)
        if entry is not None and not entry.ended:
            await store.index.write(dataclasses.replace(entry, **changes))
    except DFError as exc:
        _, workflow_id = store.layout.parse_history_subject(history_subject)
        fields = log_fields(workflow_id, run=changes.get("run"))  # its type is not at hand
        log.warning("cannot update the index entry of %s: %s", history_subject, exc, extra=fields)


async def _current(store: WorkerStore, history_subject: str) -> WorkflowSummary | None:
    """The workflow's entry; made from its start when it has none (started before the index
    existed, or its start's entry was lost)."""
    queue, workflow_id = store.layout.parse_history_subject(history_subject)
    entry = await store.index.current(queue, workflow_id)
    if entry is not None and entry.workflow_type is not None:
        return entry
    first = await store.first(history_subject)
    if first is None or first.type != h.WORKFLOW_STARTED:
        return entry
    return started_entry(workflow_id, first.body, first.time_ms)


def _when(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms > 0 else None
