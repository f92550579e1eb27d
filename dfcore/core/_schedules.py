"""Schedules: which workflow starts when, and what happens when runs overlap or are missed.

A :class:`ScheduleSpec` is what a user declares (``@app.schedule``, the ``schedules``
setting) or creates at runtime (``app.schedules.create``); it is checked when it is made, so
a bad cron expression, time zone or policy is refused where it is written. A
:class:`ScheduleState` is what the namespace stores for each schedule: its spec, whether it
is paused, when it fires next, and the last workflow it started. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from dfcore.core._codec import JSONConverter
from dfcore.core._cron import Cron, CronError, load_zone, next_interval
from dfcore.core._errors import ConfigurationError, SerializationError

OVERLAP: Final = ("skip", "buffer_one", "allow")
CATCH_UP: Final = ("all", "last", "none")
#: A time handled later than this after it came is "missed": the catch-up policy decides.
LATE_AFTER_MS: Final = 60_000
#: Missed times started at most, for ``catch_up="all"`` after a long outage.
MAX_CATCH_UP: Final = 100
SCHEDULE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule: start ``workflow`` with ``args`` at each time of ``cron`` (in
    ``timezone``) or ``every`` seconds.

    Args:
        schedule_id: names the schedule; its workflows get ids ``<schedule_id>@<time>``
            (UTC, ``2026-12-03T03:00:00Z``), one per time.
        workflow: the registered name of the workflow to start.
        cron: a five-field cron expression, such as ``"0 3 * * *"``.
        every: an interval in seconds (or a ``timedelta``), instead of ``cron``.
        timezone: the IANA time zone ``cron`` is read in (default UTC).
        args: the workflow's arguments (JSON values).
        task_queue: where the workflow runs (default: the app's ``task_queue``).
        overlap: what a time does while the workflow of the time before still runs:
            ``"skip"`` (default) starts nothing, ``"buffer_one"`` starts it once that one
            ends (at most one waits), ``"allow"`` starts it anyway.
        catch_up: what happens to times missed while no worker ran (or the server was
            down): ``"last"`` (default) starts the latest of them, ``"all"`` each one (at most
            100), ``"none"`` none.

    Raises:
        ConfigurationError: a field is invalid; the message names it and says why.
    """

    schedule_id: str
    workflow: str
    cron: str | None = None
    every: float | timedelta | None = None
    timezone: str = "UTC"
    args: Sequence[Any] = ()
    task_queue: str | None = None
    overlap: str = "skip"
    catch_up: str = "last"
    _cron: Cron | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"schedule {self.schedule_id!r}"
        if not isinstance(self.schedule_id, str) or not SCHEDULE_ID.fullmatch(self.schedule_id):
            raise ConfigurationError(
                f"schedule id {self.schedule_id!r} must be 1 to 64 letters, digits, '_' or '-'"
            )
        if not isinstance(self.workflow, str) or not self.workflow:
            raise ConfigurationError(f"{where}: workflow must be a workflow's registered name")
        every: Any = self.every
        if isinstance(every, timedelta):
            object.__setattr__(self, "every", every.total_seconds())
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"{where}: give either cron= or every=, not both or neither")
        try:
            if self.cron is not None:
                object.__setattr__(self, "_cron", Cron.parse(self.cron))
            load_zone(self.timezone)
        except CronError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        if self.every is not None and (
            isinstance(self.every, bool)
            or not isinstance(self.every, int | float)
            or not 1 <= self.every <= 366 * 86400
        ):
            raise ConfigurationError(
                f"{where}: every must be from 1 second to a year, got {every!r}"
            )
        if self.every is not None and self.timezone != "UTC":
            raise ConfigurationError(f"{where}: an every= interval takes no timezone")
        if self.overlap not in OVERLAP:
            raise ConfigurationError(
                f"{where}: overlap must be one of {', '.join(OVERLAP)}, got {self.overlap!r}"
            )
        if self.catch_up not in CATCH_UP:
            raise ConfigurationError(
                f"{where}: catch_up must be one of {', '.join(CATCH_UP)}, got {self.catch_up!r}"
            )
        args: Any = self.args
        if not isinstance(args, list | tuple):
            raise ConfigurationError(f"{where}: args must be a list of the workflow's arguments")
        object.__setattr__(self, "args", tuple(self.args))
        try:
            JSONConverter().dumps(list(self.args), what=f"the args of {where}")
        except SerializationError as exc:
            raise ConfigurationError(str(exc)) from None

    def next_after(self, after_ms: int) -> int:
        """The first time the schedule fires after ``after_ms`` (epoch milliseconds)."""
        if self._cron is not None:
            return self._cron.next_after(after_ms, load_zone(self.timezone))
        return next_interval(after_ms, int(self.every_seconds * 1000))

    @property
    def every_seconds(self) -> float:
        """``every`` in seconds (0 for a cron schedule)."""
        every = self.every
        return every.total_seconds() if isinstance(every, timedelta) else float(every or 0)

    def times(self, after_ms: int, until_ms: int, limit: int) -> list[int]:
        """The times after ``after_ms`` up to ``until_ms``, the last ``limit`` of them."""
        out: list[int] = []
        at = self.next_after(after_ms)
        if at > until_ms:
            return out
        gap = max(self.next_after(at) - at, 1000)
        if until_ms - at > 4 * limit * gap:  # a long outage: older times would drop out anyway
            at = self.next_after(until_ms - 4 * limit * gap)
        while at <= until_ms:
            out.append(at)
            if len(out) > limit:
                del out[0]
            at = self.next_after(at)
        return out

    def workflow_id(self, at_ms: int) -> str:
        """The id of the workflow this schedule starts for the time ``at_ms``."""
        return f"{self.schedule_id}@{iso(at_ms)}"

    def describe(self) -> str:
        """``cron '0 3 * * *' in Europe/Berlin`` or ``every 300s``."""
        if self.cron is not None:
            return f"cron {self.cron!r} in {self.timezone}"
        return f"every {self.every_seconds:g}s"

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.schedule_id,
            "workflow": self.workflow,
            "args": list(self.args),
            "overlap": self.overlap,
            "catch_up": self.catch_up,
        }
        if self.cron is not None:
            wire["cron"], wire["timezone"] = self.cron, self.timezone
        else:
            wire["every"] = self.every_seconds
        if self.task_queue is not None:
            wire["task_queue"] = self.task_queue
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ScheduleSpec:
        """Raises ConfigurationError (a ValueError) if the stored spec is not one."""
        return cls(
            schedule_id=wire.get("id"),  # type: ignore[arg-type]  # checked by __post_init__
            workflow=wire.get("workflow"),  # type: ignore[arg-type]
            cron=wire.get("cron"),
            every=wire.get("every"),
            timezone=wire.get("timezone") or "UTC",
            args=tuple(wire.get("args") or ()),
            task_queue=wire.get("task_queue"),
            overlap=wire.get("overlap") or "skip",
            catch_up=wire.get("catch_up") or "last",
        )

    def same_as(self, other: ScheduleSpec) -> bool:
        return self.to_wire() == other.to_wire()


@dataclass(frozen=True)
class ScheduleState:
    """What the namespace keeps for one schedule (one record, replaced on every change).

    Attributes:
        spec: the schedule.
        paused: no times fire while it is; resuming does not start the missed ones.
        next_ms: the time it fires next (None while paused).
        last_workflow_id: the workflow it started last, which the overlap policy looks at.
        buffered_ms: with ``overlap="buffer_one"``, the time waiting for the last one to end.
        note: why it was paused, or what happened last, for people.
    """

    spec: ScheduleSpec
    paused: bool = False
    next_ms: int | None = None
    last_workflow_id: str | None = None
    buffered_ms: int | None = None
    note: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": "Schedule",
            "spec": self.spec.to_wire(),
            "paused": self.paused,
            "next": self.next_ms,
            "last": self.last_workflow_id,
            "buffered": self.buffered_ms,
            "note": self.note,
        }

    @classmethod
    def from_wire(cls, wire: Any) -> ScheduleState:
        """Raises ValueError if ``wire`` is not a stored schedule."""
        if not isinstance(wire, Mapping) or wire.get("t") != "Schedule":
            raise ValueError("not a schedule record")
        spec = wire.get("spec")
        if not isinstance(spec, Mapping):
            raise ValueError("a schedule record without its spec")
        next_ms, buffered = wire.get("next"), wire.get("buffered")
        last = wire.get("last")
        return cls(
            spec=ScheduleSpec.from_wire(spec),
            paused=wire.get("paused") is True,
            next_ms=next_ms if _is_ms(next_ms) else None,
            last_workflow_id=last if isinstance(last, str) else None,
            buffered_ms=buffered if _is_ms(buffered) else None,
            note=str(wire.get("note") or ""),
        )

    def evolve(self, **changes: Any) -> ScheduleState:
        return replace(self, **changes)


def _is_ms(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def iso(at_ms: int) -> str:
    """``2026-12-03T03:00:00Z`` (milliseconds shown only when there are any)."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    text = at.strftime("%Y-%m-%dT%H:%M:%S")
    if at_ms % 1000:
        text += f".{at_ms % 1000:03d}"
    return text + "Z"


@dataclass(frozen=True)
class FireDecision:
    """What one due time of a schedule leads to (see :func:`plan`)."""

    start: list[int]  # the times to start workflows for
    buffered_ms: int | None  # the time left waiting (buffer_one)
    skipped: list[int]  # the times that start nothing


def plan(
    spec: ScheduleSpec, due: list[int], now_ms: int, running: bool, buffered: int | None
) -> FireDecision:
    """Which of the ``due`` times start a workflow, by the catch-up and overlap policies.

    ``due``: the schedule's times from the one that fired to now, in order; those older than
    :data:`LATE_AFTER_MS` were missed. ``running``: whether the last workflow it started still
    runs; ``buffered``: a time already waiting for it (buffer_one).
    """
    on_time = [t for t in due if now_ms - t <= LATE_AFTER_MS]
    missed = [t for t in due if now_ms - t > LATE_AFTER_MS]
    if spec.catch_up == "all":
        wanted = (missed + on_time)[-MAX_CATCH_UP:]
    elif spec.catch_up == "last":
        wanted = (missed[-1:] if not on_time else []) + on_time
    else:
        wanted = on_time
    skipped = [t for t in due if t not in wanted]
    if not running:
        buffered = None  # nothing runs for it to wait for (its end was missed): it is stale
    if spec.overlap == "allow" or not wanted:
        return FireDecision(wanted, buffered, skipped)
    if not running:
        first, rest = wanted[0], wanted[1:]
        if spec.overlap == "skip" or not rest:
            return FireDecision([first], None, skipped + rest)
        return FireDecision([first], rest[-1], skipped + rest[:-1])  # buffer_one
    if spec.overlap == "skip":
        return FireDecision([], buffered, skipped + wanted)
    return FireDecision([], wanted[-1], skipped + wanted[:-1])  # buffer_one: the latest waits


def declared_schedules(
    in_code: Sequence[ScheduleSpec],
    in_settings: Sequence[ScheduleSpec],
    queue_of: Callable[[str], str],
) -> list[ScheduleSpec]:
    """The schedules an app declares (``@app.schedule`` and the ``schedules`` setting), each
    with its task queue filled in (``queue_of(workflow name)``).

    Raises:
        ConfigurationError: one id is declared twice with different specs.
    """
    out: dict[str, ScheduleSpec] = {}
    for where, specs in (("in the code", in_code), ("in the schedules setting", in_settings)):
        for spec in specs:
            if spec.task_queue is None:
                spec = replace(spec, task_queue=queue_of(spec.workflow))
            known = out.get(spec.schedule_id)
            if known is not None and not known.same_as(spec):
                raise ConfigurationError(
                    f"schedule {spec.schedule_id!r} is declared twice with different specs "
                    f"(the second {where}: {spec.describe()} vs {known.describe()}); give "
                    "each schedule its own id"
                )
            out[spec.schedule_id] = spec
    return list(out.values())
