"""Listing workflows and rendering histories for people (CLI, admin pages)."""

from __future__ import annotations

from datetime import UTC, datetime

from dfcore.client._handle import WorkflowStatus, status_of
from dfcore.client._storage import ClientStore
from dfcore.core import _history as h
from dfcore.jetstream._index import WorkflowSummary


async def list_workflows(store: ClientStore, limit: int = 50) -> list[WorkflowStatus]:
    """The workflows started or changed most recently, newest first, with their status.

    The workflow index picks them (``store.index.recent``: the cost follows ``limit``, not the
    number of workflows); each status is then read from the workflow's own history and
    outcome, so no content on the index or status subjects can falsify it. Index entries with
    no history behind them (strays, or workflows already removed) are left out.
    """
    want = limit
    while True:
        entries = await store.index.recent(want)
        out = await _checked(store, entries)
        if len(out) >= limit or len(entries) < want:
            return out[:limit]
        want *= 2  # some entries had no history behind them: read further back


async def _checked(store: ClientStore, entries: list[WorkflowSummary]) -> list[WorkflowStatus]:
    """The status of each entry's workflow from its history, in the entries' order."""
    lay = store.layout
    by_subject = {lay.history_subject(e.task_queue, e.workflow_id): e for e in entries}
    lasts = dict(await store.last_many(list(by_subject)))
    outcomes = dict(await store.last_many([lay.status_for(s) for s in lasts]))
    out = []
    for subject, entry in by_subject.items():
        record = lasts.get(subject)
        if record is None:
            continue
        ended = await _ended(store, lay.status_for(subject), outcomes, record)
        out.append(status_of(entry.workflow_id, entry.workflow_type, record, ended))
    return out


async def _ended(
    store: ClientStore, status: str, outcomes: dict[str, h.Record], last: h.Record
) -> h.Record | None:
    """The verified outcome on ``status``; free when the history's last record is it."""
    candidate = outcomes.get(status)
    if candidate is None:
        return None
    if last.seq == candidate.body.get("seq") and h.terminal_status(last.commands):
        return last  # the decision it points to is the one just read from the history
    return await store.verified_outcome(status, candidate)


def render_history(events: list[h.HistoryEvent]) -> str:
    """The event table: seq, time, event type, details (like the Go seed's README)."""
    rows = [("SEQ", "TIME", "EVENT", "DETAILS")]
    for event in events:
        when = datetime.fromtimestamp(event.time_ms / 1000, tz=UTC)
        rows.append(
            (str(event.index), when.strftime("%H:%M:%S.%f")[:-3], event.type, event.summary())
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
