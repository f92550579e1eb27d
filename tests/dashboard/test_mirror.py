"""The dashboard's in-memory list answers every filter, page and total as reading every entry
would: checked against exactly that on a few thousand generated entries, some of them changing
state after they were first listed."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from dfcore import WorkflowSummary
from dfcore.contrib.dashboard._mirror import STATUSES, Filter, Mirror

T0 = datetime(2026, 12, 1, tzinfo=UTC)
KINDS = ["order", "mail", "order-eu"]


def summaries(n: int, seed: int) -> list[WorkflowSummary]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        started = T0 + timedelta(
            milliseconds=rng.randrange(0, 600_000), microseconds=rng.randrange(1000)
        )
        out.append(
            WorkflowSummary(
                workflow_id=f"{rng.choice(KINDS)}-{rng.randrange(10_000)}-{i}",
                task_queue=rng.choice(["default", "mail"]),
                status=rng.choice(STATUSES),
                workflow_type=rng.choice(["order", "mail", None]),
                started_at=started if rng.random() > 0.01 else None,
                seq=i + 1,
            )
        )
    edge = T0 + timedelta(minutes=2)  # two in the millisecond a filter below ends in
    for n, micros in enumerate((300, 700)):
        out.append(
            WorkflowSummary(
                f"edge-{n}",
                "default",
                "running",
                "order",
                started_at=edge + timedelta(microseconds=micros),
                seq=n + 1 + len(out),
            )
        )
    return out


def every_page(mirror: Mirror, wanted: Filter, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = mirror.page(wanted, limit, cursor)
        pages.append([entry.workflow_id for entry in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


FILTERS = [
    Filter(),
    Filter(statuses=frozenset({"failed", "failing"})),
    Filter(workflow_type="order", task_queue="mail"),
    Filter(id_prefix="order-eu-1"),  # a few: read by id
    Filter(id_prefix="order"),  # most: walked in time order
    Filter(id_prefix="nothing"),
    Filter(id_prefix="mail-", statuses=frozenset({"completed"}), workflow_type="mail"),
    Filter(started_after=T0 + timedelta(minutes=3), started_before=T0 + timedelta(minutes=4)),
    Filter(started_before=T0 + timedelta(minutes=2, microseconds=500), id_prefix="order-1"),
    Filter(started_before=T0 + timedelta(minutes=2, microseconds=500)),
    Filter(started_after=T0 + timedelta(minutes=2, microseconds=500)),
    Filter(started_after=T0 + timedelta(minutes=9, seconds=59, microseconds=999_999)),
]


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_pages_and_totals_are_those_of_reading_every_entry(limit: int) -> None:
    mirror = Mirror()
    entries = summaries(3000, seed=limit)
    for entry in entries:
        mirror.apply(entry)
    for later in summaries(3000, seed=limit)[::5]:  # a newer state of every fifth workflow
        mirror.apply(replace(later, status="completed", seq=10_000 + later.seq))
    current = {entry.workflow_id: mirror.get(entry.workflow_id) for entry in entries}
    newest_first = sorted(
        current.values(),
        key=lambda e: (int(e.started_at.timestamp() * 1000) if e.started_at else 0, e.workflow_id),
        reverse=True,
    )
    for wanted in FILTERS:
        expected = [e.workflow_id for e in newest_first if wanted.matches(e)]
        pages = every_page(mirror, wanted, limit)
        assert [i for page in pages for i in page] == expected, wanted
        assert all(len(page) == limit for page in pages[:-1]), wanted
        assert mirror.page(wanted, limit).total == len(expected), wanted


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown status 'done'"):
        Filter(statuses=frozenset({"done", "failed"}))
