"""Listing workflows and rendering histories for people (CLI, admin pages)."""

from __future__ import annotations

from datetime import UTC, datetime

from . import _history as h
from ._client import WorkflowStatus, status_of
from ._store import Store


async def list_workflows(store: Store, limit: int = 50) -> list[WorkflowStatus]:
    """The most recently active workflows, newest first, with their status."""
    subjects = await store.history_subjects()
    lasts = await store.last_many(subjects)
    lasts.sort(key=lambda item: item[1].seq, reverse=True)
    lasts = lasts[:limit]
    outcomes = await store.last_many([store.layout.status_for(s) for s, _ in lasts])
    ended = {store.layout.parse_status_subject(s): r for s, r in outcomes}
    out = []
    for subject, record in lasts:
        _, workflow_id = store.layout.parse_history_subject(subject)
        out.append(status_of(workflow_id, None, record, ended.get(workflow_id)))
    return out


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
