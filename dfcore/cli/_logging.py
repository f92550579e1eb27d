"""How the worker commands write their log: text lines for people, or JSON lines for a log
collector (``--log-format json``); :class:`JsonFormatter` also serves projects that configure
logging themselves (docs/observability.md, "Logs")."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import orjson

from dfcore.core._logfields import FIELDS

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: What every record holds; any other attribute came with ``extra=`` (or a filter).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_OPTIONS = orjson.OPT_NON_STR_KEYS


class JsonFormatter(logging.Formatter):
    """Writes each record as one JSON object on one line.

    Its keys: ``time`` (ISO 8601 in UTC, with milliseconds), ``level``, ``logger``,
    ``message`` (with its arguments filled in); then, on a line about a workflow, its
    ``workflow_id``, ``run`` and ``workflow_type`` (``activity`` and ``attempt`` on a line about
    an activity attempt), and any other attribute the record was given with ``extra=``;
    ``exc_info``, the formatted traceback, when it carries an exception. A value JSON cannot
    hold is written as its ``str()``.

    It needs no arguments, so logging's configuration can make it by name, as in Django's
    ``LOGGING``: ``"formatters": {"json": {"()": "dfcore.cli.JsonFormatter"}}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        attributes = vars(record)
        line.update((key, attributes[key]) for key in FIELDS if key in attributes)
        for key, value in attributes.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(line, default=str, option=_OPTIONS).decode()
        except TypeError:  # an int beyond 64 bits, a cycle, a __str__ that raises...
            plain = {key: _plain(value) for key, value in line.items()}
            return orjson.dumps(plain, default=str, option=_OPTIONS).decode()


def _plain(value: Any) -> Any:
    """``value`` if JSON can hold it (as orjson writes it), else its ``str()``."""
    try:
        orjson.dumps(value, default=str, option=_OPTIONS)
        return value
    except TypeError:
        pass
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def log_formatter(log_format: str | None = None) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``; by default ``DF_LOG_FORMAT``'s,
    else ``text``).

    Raises:
        ValueError: an unknown format.
    """
    chosen = (log_format or os.environ.get("DF_LOG_FORMAT") or "text").strip().lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(
            f"unknown log format {chosen!r}: use 'text' or 'json' (--log-format, DF_LOG_FORMAT)"
        )
    return JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str, log_format: str | None = None) -> None:
    """Log to stderr (unless logging is configured already), dfcore at ``level``.

    ``log_format``: ``"text"`` or ``"json"`` (one object per line, see
    :class:`JsonFormatter`); by default ``DF_LOG_FORMAT``'s, else text.
    """
    try:
        formatter = log_formatter(log_format)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    handler = logging.StreamHandler()  # stderr; dropped if logging is configured already
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("dfcore").setLevel(level.upper())


def log_format_option(command: F) -> F:
    """``--log-format text|json`` (default: ``DF_LOG_FORMAT``, else text), for the worker
    commands."""
    return click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS, case_sensitive=False),
        default="text",
        envvar="DF_LOG_FORMAT",
        show_default=True,
        show_envvar=True,
        help="How log lines look on stderr: text, or json (one object per line, with the "
        "workflow_id, run and workflow_type of lines about a workflow as fields).",
    )(command)
