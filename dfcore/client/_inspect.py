"""Listing workflows and rendering histories for people (CLI, admin pages)."""

from __future__ import annotations

from datetime import UTC, datetime

from dfcore.client._handle import WorkflowStatus, status_of
from dfcore.client._storage import ClientStore
from dfcore.core import _history as h


async def list_workflows(store: ClientStore, limit: int = 50) -> list[WorkflowStatus]:
    """The most recently active workflows, newest first, with their status.

    Subjects that are not histories (stray messages) are left out, and each outcome is
    checked against its history, so no content on the subjects can break or falsify it.
    """
    lay = store.layout
    ids: dict[str, str] = {}
    for subject in await store.history_subjects():
        try:
            ids[subject] = lay.parse_history_subject(subject)[1]
        except ValueError:
            continue
    lasts = await store.last_many(list(ids))
    lasts.sort(key=lambda item: item[1].seq, reverse=True)
    lasts = lasts[:limit]
    outcomes = dict(await store.last_many([lay.status_for(s) for s, _ in lasts]))
    out = []
    for subject, record in lasts:
        ended = await _ended(store, lay.status_for(subject), outcomes, record)
        out.append(status_of(ids[subject], None, record, ended))
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
