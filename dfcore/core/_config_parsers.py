"""The parsers of the settings: a raw value (from kwargs, a config object or the environment)
in, the validated value out, or ``ValueError("<what is expected>")``.

``PARSERS`` has one per setting; ``_config.Settings`` applies them, and
:func:`parse` turns their ``ValueError`` into a ``ConfigurationError`` naming the setting.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from dfcore.core._errors import ConfigurationError
from dfcore.core._schedules import ScheduleSpec
from dfcore.core._security import PARSERS as SECURITY_PARSERS
from dfcore.core._security import SECRETS, mask_url

# --- parsers: raw value -> validated value, or ValueError("<what is expected>") ----------------

_Parser = Callable[[Any], Any]
_URL_SCHEMES = ("nats", "tls", "ws", "wss")
_URL_EXPECTED = (
    "nats://, tls://, ws:// or wss:// URLs with a host, comma-separated, "
    "e.g. 'nats://127.0.0.1:4222'"
)
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?")


def _parse_urls(value: Any) -> str:
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise ValueError(_URL_EXPECTED)
    urls = [url.strip() for url in value.split(",") if url.strip()]
    if not urls:
        raise ValueError(_URL_EXPECTED)
    for url in urls:
        _check_url(url)
    return ",".join(urls)


def _check_url(url: str) -> None:
    if "://" not in url:
        guess = mask_url(f"nats://{url}")
        shown = guess.removeprefix("nats://")
        raise ValueError(f"{_URL_EXPECTED}; {shown!r} has no scheme, did you mean {guess!r}?")
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        if "@" in url:  # the parser's words may quote part of the password
            raise ValueError(
                f"{_URL_EXPECTED}; {shown!r} is not a valid URL (check the host and port; "
                "percent-encode special characters in a user name or password)"
            ) from None
        raise ValueError(f"{_URL_EXPECTED}; {shown!r}: {exc}") from exc
    if parts.scheme not in _URL_SCHEMES:
        raise ValueError(f"{_URL_EXPECTED}; {shown!r} has scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"{_URL_EXPECTED}; {shown!r} has no host")


def _matching(pattern: str, expected: str) -> _Parser:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(expected)
        return value

    return parse


def _integer(low: int, high: int | None = None) -> _Parser:
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(value: Any) -> int:
        number = _to_int(value)
        if number is None or number < low or (high is not None and number > high):
            raise ValueError(expected)
        return number

    return parse


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _seconds(low: float, *, inclusive: bool) -> _Parser:
    expected = f"a number of seconds {'>=' if inclusive else '>'} {low:g}"

    def parse(value: Any) -> float:
        number = _to_float(value)
        if number is None or number < low or (number == low and not inclusive):
            raise ValueError(expected)
        return number

    return parse


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_storage(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in ("file", "memory"):
        return value.strip().lower()
    raise ValueError("'file' or 'memory'")


def _parse_event_loop(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in ("auto", "asyncio", "uvloop"):
        return value.strip().lower()
    raise ValueError("'auto', 'asyncio' or 'uvloop'")


def _parse_codec(value: object) -> object | None:
    if value is None or (not isinstance(value, str) and has_codec_methods(value)):
        return value
    if isinstance(value, str) and _IMPORT_PATH.fullmatch(value.strip()):
        return value.strip()
    raise ValueError(
        "a PayloadCodec instance or class, or its import path like 'myproject.codecs:Fernet'"
    )


def _parse_schedules(value: Any) -> tuple[ScheduleSpec, ...]:
    """``{"nightly": {"workflow": "report", "cron": "0 3 * * *", ...}}`` (or its JSON)."""
    if isinstance(value, tuple) and all(isinstance(v, ScheduleSpec) for v in value):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"schedules as JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise ValueError(
            'schedules by id, such as {"nightly": {"workflow": "report", "cron": "0 3 * * *"}}'
        )
    specs = []
    for schedule_id, entry in value.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"schedule {schedule_id!r} to be a dict of its fields")
        unknown = set(entry) - _SCHEDULE_FIELDS
        if unknown:
            raise ValueError(
                f"schedule {schedule_id!r} without {sorted(unknown)}: its fields are "
                f"{', '.join(sorted(_SCHEDULE_FIELDS))}"
            )
        try:
            specs.append(ScheduleSpec(str(schedule_id), **entry))
        except ConfigurationError as exc:
            raise ValueError(f"schedules that can run, but {exc}") from None
        except TypeError as exc:
            raise ValueError(f"schedule {schedule_id!r} with its fields: {exc}") from None
    return tuple(specs)


_SCHEDULE_FIELDS = frozenset(
    {"workflow", "cron", "every", "timezone", "args", "task_queue", "overlap", "catch_up"}
)


def has_codec_methods(value: object) -> bool:
    return callable(getattr(value, "encode", None)) and callable(getattr(value, "decode", None))


PARSERS: dict[str, _Parser] = {
    "nats_url": _parse_urls,
    "namespace": _matching(r"[A-Za-z0-9_-]{1,32}", "1-32 characters from A-Z a-z 0-9 _ -"),
    "task_queue": _matching(r"[A-Za-z0-9_-]{1,64}", "1-64 characters from A-Z a-z 0-9 _ -"),
    "connect_timeout": _seconds(0, inclusive=False),
    "activity_concurrency": _integer(1),
    "workflow_concurrency": _integer(1),
    "workflow_cache_size": _integer(0),
    "activity_ack_wait": _seconds(1, inclusive=True),
    "workflow_ack_wait": _seconds(1, inclusive=True),
    "stream_replicas": _integer(1, 5),
    "worker_event_loop": _parse_event_loop,
    "worker_gc_threshold": _integer(0),
    "storage": _parse_storage,
    "codec": _parse_codec,
    "default_activity_timeout": _seconds(0, inclusive=False),
    "history_retention": _seconds(0, inclusive=True),
    "schedules": _parse_schedules,
    **SECURITY_PARSERS,
}


def check_queue_name(queue: Any, what: str) -> None:
    """Raise ConfigurationError unless ``queue`` can name a task queue (``what`` uses it)."""
    try:
        PARSERS["task_queue"](queue)
    except ValueError as exc:
        problem = f"{what}: task_queue {queue!r} is invalid: expected {exc}"
        raise ConfigurationError(problem) from None


def parse(name: str, value: Any, label: str) -> Any:
    try:
        return PARSERS[name](value)
    except ValueError as exc:
        raise ConfigurationError(f"{label} is invalid: {_got(name, value)}expected {exc}") from None


def _got(name: str, value: Any) -> str:
    """``got <value>; `` for an error message, never showing a secret."""
    if name in SECRETS:
        return "the value is a secret and not shown; "
    if name == "nats_url" and isinstance(value, str):
        value = mask_url(value)
    elif name == "nats_url" and isinstance(value, list | tuple):
        value = [mask_url(item) if isinstance(item, str) else item for item in value]
    return f"got {value!r}; "
