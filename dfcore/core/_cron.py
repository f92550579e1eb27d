"""When a schedule fires: cron expressions in a time zone, and fixed intervals.

Times are epoch milliseconds, as everywhere in the engine. A cron expression is read in the
schedule's time zone, so ``0 3 * * *`` in ``Europe/Berlin`` is three in the morning there,
summer and winter. Where the clocks change:

* a time that does not exist that day (02:30 when clocks go from 02:00 to 03:00) fires once, at
  the moment they jump; several such times fire together, once;
* a time that happens twice (02:30 when clocks go back from 03:00 to 02:00) fires once, the
  first time.

An interval (``every``) ignores time zones: it fires at whole multiples of its length since
the Unix epoch (every 5 minutes: at :00, :05, ...), so every process agrees on the times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {
    "month": {name: i for i, name in enumerate(_MONTHS, 1)},
    "day of week": {name: i for i, name in enumerate(_DAYS)},
}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SEARCH_DAYS = 366 * 8  # a day that exists at all comes round within eight years (29 February)
_MINUTE = timedelta(minutes=1)
_SLACK = timedelta(hours=3)  # more than any clock change moves local time


class CronError(ValueError):
    """A cron expression, time zone or interval that cannot be used; the message says why."""


@dataclass(frozen=True)
class Cron:
    """A five-field cron expression (minute hour day-of-month month day-of-week).

    Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``,
    and names for months and days (``jan``, ``mon``); day of week 0 and 7 are Sunday. As in
    Vixie cron, when both day fields are restricted a day matching either one fires. The
    aliases ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly``
    (``@annually``) are accepted.
    """

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Raises CronError naming the field and what is wrong with it."""
        if not isinstance(expression, str):
            raise CronError(f"a cron expression must be a string, got {type(expression).__name__}")
        text = _ALIASES.get(expression.strip().lower(), expression.strip())
        parts = text.split()
        if len(parts) != 5:
            raise CronError(
                f"cron expression {expression!r} has {len(parts)} fields; it needs 5: "
                "minute hour day-of-month month day-of-week, such as '0 3 * * *'"
            )
        values = [
            _field(expression, part, name, low, high)
            for part, (name, low, high) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in values[4])
        cron = cls(
            expression=expression,
            minutes=tuple(sorted(values[0])),
            hours=tuple(sorted(values[1])),
            days=frozenset(values[2]),
            months=frozenset(values[3]),
            weekdays=weekdays,
            any_day=parts[2].startswith("*"),  # as in Vixie cron: '*/2' restricts nothing
            any_weekday=parts[4].startswith("*"),
        )
        by_date_only = cron.any_weekday and not cron.any_day
        days_fit = any(cron._day_fits(day, month) for month in cron.months for day in cron.days)
        if by_date_only and not days_fit:
            raise CronError(f"cron expression {expression!r} never fires: no month has that day")
        return cron

    def _day_fits(self, day: int, month: int) -> bool:
        return day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)

    def matches(self, day: date) -> bool:
        """Whether the expression fires on ``day``."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = day.isoweekday() % 7 in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return by_weekday
        if self.any_weekday:
            return by_date
        return by_date or by_weekday

    def next_after(self, after_ms: int, zone: ZoneInfo) -> int:
        """The first time it fires after ``after_ms`` (epoch milliseconds), in ``zone``."""
        after = datetime.fromtimestamp(after_ms / 1000, tz=UTC)
        # Wall-clock times this long before ``after`` cannot come after it, however the
        # clocks changed: they are stepped over without working out when they happened.
        floor = after.astimezone(zone).replace(tzinfo=None) - _SLACK
        day = floor.date()
        for _ in range(_SEARCH_DAYS):
            if self.matches(day):
                for hour in self.hours:
                    if day == floor.date() and hour < floor.hour:
                        continue
                    for minute in self.minutes:
                        local = datetime.combine(day, time(hour, minute))
                        if local < floor:
                            continue
                        at = _instant(local, zone)
                        if at > after:
                            return int(at.timestamp() * 1000)
            day += timedelta(days=1)
        raise CronError(f"cron expression {self.expression!r} does not fire in eight years")


def _field(expression: str, text: str, name: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise _bad(expression, name, item, f"step {step_text!r} is not a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = _value(expression, name, start), _value(expression, name, end)
            if first > last:
                raise _bad(expression, name, item, f"range {body!r} runs backwards")
        else:
            first = _value(expression, name, body)
            last = high if step_text else first
        for value in (first, last):
            if not low <= value <= high:
                raise _bad(expression, name, item, f"{value} is out of range {low}-{high}")
        out.update(range(first, last + 1, step))
    return out


def _value(expression: str, name: str, text: str) -> int:
    named = _NAMES.get(name, {}).get(text.lower())
    if named is not None:
        return named
    if not re.fullmatch(r"\d{1,2}", text):
        raise _bad(expression, name, text, "not a number" + (" or name" if name in _NAMES else ""))
    return int(text)


def _bad(expression: str, name: str, item: str, why: str) -> CronError:
    return CronError(f"cron expression {expression!r}: {name} {item!r}: {why}")


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The moment a wall-clock time happens in ``zone``: its first occurrence when the clocks
    go back, the moment they jump when they skip it."""
    at = local.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first occurrence
    if at.astimezone(zone).replace(tzinfo=None) == local:
        return at
    at = local.replace(tzinfo=zone, fold=1).astimezone(UTC)  # before the jump
    while at.astimezone(zone).replace(tzinfo=None) < local:
        at += _MINUTE
    return at


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises CronError naming it when there is none."""
    if not isinstance(name, str) or not name:
        raise CronError(f"a time zone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"time zone {name!r} is unknown: use an IANA name such as 'Europe/Berlin' or 'UTC' "
            "(on systems without a zone database, pip install tzdata)"
        ) from None


def next_interval(after_ms: int, every_ms: int) -> int:
    """The first whole multiple of ``every_ms`` since the epoch after ``after_ms``."""
    return (after_ms // every_ms + 1) * every_ms
