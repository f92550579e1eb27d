"""The dashboard's copy of the workflow index: every workflow's entry, kept in memory from
:meth:`dfcore.App.awatch_workflows`, sorted by start time, with counts and per-minute figures.

Listing 100,000 workflows a page at a time must not read 100,000 entries from the server per
page. The server hands the current entries out once, when the dashboard starts, and then each
change (see "The workflow index" in docs/architecture.md); the dashboard answers every page,
filter and count from this copy. A page is a walk from the cursor's place in the sorted keys
that stops once it has the page; counts per status are kept as entries change.
"""

from __future__ import annotations

import base64
import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from dfcore import WorkflowSummary

STATUSES = ("running", "failing", "completed", "failed", "cancelled", "timed_out")
_Key = tuple[int, str]  # (start time in ms, workflow id): the sort order, newest last
_MINUTE_MS = 60_000
_KEEP_MINUTES = 24 * 60  # per-minute figures kept for a day


@dataclass(frozen=True)
class Filter:
    """What a list page asks for; every field is optional."""

    statuses: frozenset[str] = frozenset()
    workflow_type: str | None = None
    task_queue: str | None = None
    id_prefix: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None

    @property
    def only_status(self) -> bool:
        """Whether nothing but statuses is asked (the total is then known from the counts)."""
        return not (
            self.workflow_type
            or self.task_queue
            or self.id_prefix
            or self.started_after
            or self.started_before
        )

    def matches(self, entry: WorkflowSummary) -> bool:
        if self.statuses and entry.status not in self.statuses:
            return False
        if self.workflow_type and entry.workflow_type != self.workflow_type:
            return False
        if self.task_queue and entry.task_queue != self.task_queue:
            return False
        if self.id_prefix and not entry.workflow_id.startswith(self.id_prefix):
            return False
        started = entry.started_at
        if self.started_after and (started is None or started < self.started_after):
            return False
        return not (self.started_before and (started is None or started >= self.started_before))


@dataclass(frozen=True)
class Page:
    items: list[WorkflowSummary]
    next_cursor: str | None
    total: int


@dataclass
class _Minute:
    started: int = 0
    completed: int = 0
    failed: int = 0
    durations: list[float] = field(default_factory=list)  # ms, of workflows that ended


class Mirror:
    """Every workflow's current entry, in start-time order."""

    def __init__(self) -> None:
        self._entries: dict[str, WorkflowSummary] = {}
        self._keys: list[_Key] = []
        self._counts: Counter[str] = Counter()
        self._minutes: dict[int, _Minute] = defaultdict(_Minute)
        self.listeners: list[Callable[[WorkflowSummary], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, workflow_id: str) -> WorkflowSummary | None:
        return self._entries.get(workflow_id)

    def counts(self) -> dict[str, int]:
        return {status: self._counts.get(status, 0) for status in STATUSES}

    def workflow_types(self) -> set[str]:
        return {e.workflow_type for e in self._entries.values() if e.workflow_type}

    def apply(self, entry: WorkflowSummary) -> bool:
        """Take a new or changed entry; False when it is older than the one held."""
        old = self._entries.get(entry.workflow_id)
        if old is not None:
            if entry.seq and old.seq >= entry.seq:
                return False
            # It keeps the start time first seen (the client's, where the worker's end entry
            # has the server's stamp), so a workflow keeps its place in the list.
            entry = replace(entry, started_at=old.started_at or entry.started_at)
            self._remove(old)
        self._entries[entry.workflow_id] = entry
        bisect.insort(self._keys, _key(entry))
        self._counts[entry.status] += 1
        self._count_minutes(old, entry)
        for listener in list(self.listeners):
            listener(entry)
        return True

    def _remove(self, entry: WorkflowSummary) -> None:
        key = _key(entry)
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            del self._keys[at]
        self._counts[entry.status] -= 1

    def _count_minutes(self, old: WorkflowSummary | None, new: WorkflowSummary) -> None:
        if old is None and new.started_at is not None:
            self._minutes[_minute(new.started_at)].started += 1
        if new.ended and (old is None or not old.ended) and new.ended_at is not None:
            minute = self._minutes[_minute(new.ended_at)]
            if new.status == "completed":
                minute.completed += 1
            else:
                minute.failed += 1
            if new.started_at is not None:
                minute.durations.append((new.ended_at - new.started_at).total_seconds() * 1000)
        if len(self._minutes) > _KEEP_MINUTES + 60:
            oldest = max(self._minutes) - _KEEP_MINUTES
            for minute_ms in [m for m in self._minutes if m < oldest]:
                del self._minutes[minute_ms]

    # -- reading ------------------------------------------------------------------------------

    def page(self, wanted: Filter, limit: int, cursor: str | None = None) -> Page:
        """Up to ``limit`` entries matching ``wanted``, newest first, from ``cursor`` on."""
        end = len(self._keys)
        if cursor is not None:
            end = bisect.bisect_left(self._keys, decode_cursor(cursor))
        items: list[WorkflowSummary] = []
        at = end - 1
        while at >= 0 and len(items) < limit:
            entry = self._entries[self._keys[at][1]]
            if wanted.matches(entry):
                items.append(entry)
            at -= 1
        more = at >= 0 and any(self._matching(wanted, range(at, -1, -1), stop_at=1))
        next_cursor = encode_cursor(_key(items[-1])) if items and more else None
        return Page(items, next_cursor, self._total(wanted))

    def _total(self, wanted: Filter) -> int:
        if wanted.only_status:
            if not wanted.statuses:
                return len(self._entries)
            return sum(self._counts.get(s, 0) for s in wanted.statuses)
        return sum(1 for entry in self._entries.values() if wanted.matches(entry))

    def _matching(
        self, wanted: Filter, positions: Iterable[int], stop_at: int
    ) -> Iterable[WorkflowSummary]:
        found = 0
        for at in positions:
            entry = self._entries[self._keys[at][1]]
            if wanted.matches(entry):
                yield entry
                found += 1
                if found >= stop_at:
                    return

    def metrics(self, minutes: int, now: datetime | None = None) -> dict[str, object]:
        """Started, completed and failed per minute over the last ``minutes``, and the
        latency percentiles of the workflows that ended in them."""
        last = _minute(now or datetime.now(UTC))
        rows = []
        durations: list[float] = []
        for minute_ms in range(last - (minutes - 1) * _MINUTE_MS, last + 1, _MINUTE_MS):
            figures = self._minutes.get(minute_ms) or _Minute()
            rows.append(
                {
                    "minute": _iso(minute_ms),
                    "started": figures.started,
                    "completed": figures.completed,
                    "failed": figures.failed,
                }
            )
            durations += figures.durations
        durations.sort()
        latency: dict[str, float | int | None] = {
            "p50": _percentile(durations, 50),
            "p90": _percentile(durations, 90),
            "p99": _percentile(durations, 99),
            "count": len(durations),
        }
        return {"per_minute": rows, "latency_ms": latency, "window_minutes": minutes}


def _key(entry: WorkflowSummary) -> _Key:
    started = entry.started_at
    return (int(started.timestamp() * 1000) if started else 0, entry.workflow_id)


def encode_cursor(key: _Key) -> str:
    raw = f"{key[0]}:{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> _Key:
    """The key a cursor stands for.

    Raises:
        ValueError: it is not a cursor this dashboard made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, workflow_id = raw.split(":", 1)
        return (int(ms), workflow_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cursor!r} is not a page cursor") from exc


def _minute(when: datetime) -> int:
    ms = int(when.timestamp() * 1000)
    return ms - ms % _MINUTE_MS


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return round(sorted_values[rank], 1)
