"""The dashboard's copy of the workflow index: every workflow's entry, kept in memory from
:meth:`dfcore.App.awatch_workflows`, sorted by start time, with counts and per-minute figures.

Listing 100,000 workflows a page at a time must not read 100,000 entries from the server per
page. The server hands the current entries out once, when the dashboard starts, and then each
change (see "The workflow index" in docs/architecture.md); the dashboard answers every page,
filter and count from this copy. A page is a walk from the cursor's place in the sorted keys
that stops once it has the page; with an id prefix, it is one pass over that prefix's ids (kept
sorted too) for the page and its total. Counts per status, type and queue are kept as entries
change, so other totals need no walk, unless a start-time range is asked, and then only over
that range.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
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

    def __post_init__(self) -> None:
        unknown = sorted(self.statuses - set(STATUSES))
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; a status is one of {STATUSES}")

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
        self._key_of: dict[str, _Key] = {}
        self._ids: list[str] = []  # sorted: an id prefix is a range
        self._counts: Counter[str] = Counter()
        self._kinds: Counter[tuple[str, str | None, str]] = Counter()  # status, type, queue
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
        else:
            bisect.insort(self._ids, entry.workflow_id)
        self._entries[entry.workflow_id] = entry
        key = self._key_of[entry.workflow_id] = _key(entry)
        bisect.insort(self._keys, key)
        self._counts[entry.status] += 1
        self._kinds[_kind(entry)] += 1
        self._count_minutes(old, entry)
        for listener in list(self.listeners):
            listener(entry)
        return True

    def _remove(self, entry: WorkflowSummary) -> None:
        key = self._key_of[entry.workflow_id]
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            del self._keys[at]
        self._counts[entry.status] -= 1
        self._kinds[_kind(entry)] -= 1

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
        after = decode_cursor(cursor) if cursor is not None else None
        prefixed = self._prefixed(wanted)
        if prefixed is not None:  # the prefix's entries are read for the total in any case
            keys = sorted(
                self._key_of[entry.workflow_id] for entry in self._among(wanted, prefixed)
            )
            total = len(keys)
            end = len(keys) if after is None else bisect.bisect_left(keys, after)
            found = [self._entries[key[1]] for key in reversed(keys[max(end - limit, 0) : end])]
            more = end > limit
        else:
            end = len(self._keys) if after is None else bisect.bisect_left(self._keys, after)
            walk = (self._entries[self._keys[at][1]] for at in range(end - 1, -1, -1))
            matching = self._among(wanted, walk)
            found = list(itertools.islice(matching, limit))
            more = next(matching, None) is not None
            total = self._total(wanted)
        next_cursor = encode_cursor(self._key_of[found[-1].workflow_id]) if found and more else None
        return Page(found, next_cursor, total)

    def _total(self, wanted: Filter) -> int:
        """How many entries match a filter without an id prefix."""
        if wanted.started_after or wanted.started_before:
            lo, hi = 0, len(self._keys)
            if wanted.started_after:
                lo = bisect.bisect_left(self._keys, (_ms(wanted.started_after), ""))
            if wanted.started_before:  # its own millisecond too: matches() is exact
                hi = bisect.bisect_left(self._keys, (_ms(wanted.started_before) + 1, ""))
            started = (self._entries[key[1]] for key in self._keys[lo:hi])
            return sum(1 for _ in self._among(wanted, started))
        return sum(
            n
            for (status, workflow_type, queue), n in self._kinds.items()
            if (not wanted.statuses or status in wanted.statuses)
            and (not wanted.workflow_type or workflow_type == wanted.workflow_type)
            and (not wanted.task_queue or queue == wanted.task_queue)
        )

    def _prefixed(self, wanted: Filter) -> list[WorkflowSummary] | None:
        """The entries whose ids start with the filter's prefix (None: it has none)."""
        prefix = wanted.id_prefix
        if not prefix:
            return None
        lo = bisect.bisect_left(self._ids, prefix)
        hi = lo
        while hi < len(self._ids) and self._ids[hi].startswith(prefix):
            hi += 1
        return [self._entries[workflow_id] for workflow_id in self._ids[lo:hi]]

    @staticmethod
    def _among(wanted: Filter, entries: Iterable[WorkflowSummary]) -> Iterator[WorkflowSummary]:
        return (entry for entry in entries if wanted.matches(entry))

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


def _kind(entry: WorkflowSummary) -> tuple[str, str | None, str]:
    return (entry.status, entry.workflow_type, entry.task_queue)


def _key(entry: WorkflowSummary) -> _Key:
    started = entry.started_at
    return (_ms(started) if started else 0, entry.workflow_id)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


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
    ms = _ms(when)
    return ms - ms % _MINUTE_MS


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return round(sorted_values[rank], 1)
