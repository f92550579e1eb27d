"""Celery's schedules, as DurableFuture schedules: ``crontab`` and ``schedule``.

``from dfcore.contrib.celery.schedules import crontab`` in place of ``from celery.schedules
import crontab``. A ``crontab(...)`` becomes a five-field cron expression (:attr:`crontab.cron`)
read in the Celery ``timezone`` setting; a ``schedule(run_every)``, a ``timedelta`` or a number
of seconds becomes an interval. The entries of ``app.conf.beat_schedule`` are declared as
schedules of the app, which its workers create and keep up to date: no beat process to run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from .exceptions import unsupported

__all__ = ["crontab", "schedule", "solar"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: Each field: its name, its smallest value, how many values it has, and the names it takes.
_FIELDS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "minute": (0, 60, ()),
    "hour": (0, 24, ()),
    "day_of_week": (0, 7, _DAYS),
    "day_of_month": (1, 31, ()),
    "month_of_year": (1, 12, _MONTHS),
}
_PART = re.compile(r"(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\d+))?")

Cronspec = int | str | Iterable[int]


class crontab:  # noqa: N801 - Celery's name
    """``crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")``: Celery's crontab.

    Each field takes what Celery's does: a number, a set or list of numbers, or a string such
    as ``"*"``, ``"*/15"``, ``"1-5"``, ``"0-30/10"``, ``"1,15"``; day names (``"mon-fri"``,
    ``"sunday"``) in ``day_of_week``, where Sunday is 0, and month names in ``month_of_year``.
    A range may wrap round (``"fri-mon"``), as in Celery.

    Raises:
        ValueError: a field is out of range or cannot be read; the message names it.
        NotSupportedError: both ``day_of_week`` and ``day_of_month`` are restricted: Celery
            runs such a crontab on days that match both, a cron expression on days that match
            either.
    """

    def __init__(
        self,
        minute: Cronspec = "*",
        hour: Cronspec = "*",
        day_of_week: Cronspec = "*",
        day_of_month: Cronspec = "*",
        month_of_year: Cronspec = "*",
        **_: Any,
    ) -> None:
        self.minute = _expand("minute", minute)
        self.hour = _expand("hour", hour)
        self.day_of_week = _expand("day_of_week", day_of_week)
        self.day_of_month = _expand("day_of_month", day_of_month)
        self.month_of_year = _expand("month_of_year", month_of_year)
        if not _full("day_of_week", self.day_of_week) and not _full(
            "day_of_month", self.day_of_month
        ):
            raise unsupported(
                "a crontab that restricts both day_of_week and day_of_month (Celery runs it on "
                "days that match both, cron on days that match either; restrict one of them)"
            )
        #: The five-field cron expression: minute, hour, day of month, month, day of week.
        self.cron = " ".join(
            _text(name, getattr(self, name))
            for name in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        )

    @classmethod
    def from_string(cls, expression: str) -> crontab:
        """``crontab.from_string("0 3 * * mon-fri")``: minute, hour, day of month, month, day
        of week."""
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"a crontab string has five fields, not {len(fields)}: {expression!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def __repr__(self) -> str:
        return f"<crontab: {self.cron} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.cron == self.cron

    def __hash__(self) -> int:
        return hash(self.cron)


class schedule:  # noqa: N801 - Celery's name
    """``schedule(run_every)``: every ``run_every`` (a ``timedelta`` or seconds).

    It fires at whole multiples of its length since 1970-01-01 UTC (every 30 seconds: at :00
    and :30), wherever and whenever the workers started.
    """

    def __init__(self, run_every: float | timedelta, relative: bool = False, **_: Any) -> None:
        if isinstance(run_every, bool) or not isinstance(run_every, int | float | timedelta):
            raise TypeError(
                f"schedule(run_every) takes a timedelta or a number of seconds, not {run_every!r}"
            )
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        )
        self.relative = relative

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    def __hash__(self) -> int:
        return hash(self.run_every)


class solar:  # noqa: N801 - Celery's name
    """Celery's solar schedules (sunrise, sunset...) are not supported: use a crontab."""

    def __init__(self, *_: Any, **__: Any) -> None:
        raise unsupported("the solar schedule (celery.schedules.solar; use a crontab)")


def _expand(name: str, spec: Cronspec) -> frozenset[int]:
    """The values a crontab field stands for, as Celery reads it."""
    low, count, _ = _FIELDS[name]
    if isinstance(spec, bool):
        raise TypeError(f"crontab {name}={spec!r}: give a number, a string or a set of numbers")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.split(","):
            values.update(_part(name, spec, part.strip()))
    elif isinstance(spec, Iterable):
        values = set(spec)
    else:
        raise TypeError(f"crontab {name}={spec!r}: give a number, a string or a set of numbers")
    for value in values:
        if not isinstance(value, int) or not low <= value < low + count:
            raise ValueError(
                f"crontab {name}={spec!r}: {value!r} is out of range {low}-{low + count - 1}"
            )
    if not values:
        raise ValueError(f"crontab {name}={spec!r} has no values")
    return frozenset(values)


def _part(name: str, spec: str, part: str) -> list[int]:
    low, count, _ = _FIELDS[name]
    every = list(range(low, low + count))
    match = _PART.fullmatch(part)
    if match is None:
        raise ValueError(f"crontab {name}={spec!r}: cannot read {part!r}")
    start, end, step = match.group("start", "end", "step")
    if start == "*":
        if end is not None:
            raise ValueError(f"crontab {name}={spec!r}: cannot read {part!r}")
        picked = every
    else:
        first = _number(name, spec, start)
        last = first if end is None else _number(name, spec, end)
        if last >= first:
            picked = list(range(first, last + 1))
        else:  # a range that wraps round, "fri-mon"
            picked = list(range(first, low + count)) + list(range(low, last + 1))
    if step is not None:
        if int(step) == 0:
            raise ValueError(f"crontab {name}={spec!r}: a step of 0 in {part!r}")
        picked = picked[:: int(step)]
    return picked


def _number(name: str, spec: str, token: str) -> int:
    if token.isdigit():
        return int(token)
    names = _FIELDS[name][2]
    low = _FIELDS[name][0]
    abbreviation = token[:3].lower()
    if abbreviation in names:
        return names.index(abbreviation) + low
    what = "a number or a name" if names else "a number"
    raise ValueError(f"crontab {name}={spec!r}: {token!r} is not {what}")


def _full(name: str, values: frozenset[int]) -> bool:
    low, count, _ = _FIELDS[name]
    return values == frozenset(range(low, low + count))


def _text(name: str, values: frozenset[int]) -> str:
    """A cron field for ``values``: ``*``, or a list of numbers and ranges (``1-5,10``)."""
    if _full(name, values):
        return "*"
    ordered = sorted(values)
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ",".join(
        f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)) for run in runs
    )
