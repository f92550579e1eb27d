"""What the server stamped on a stored message: when it stored it, and what it checked.

A record's body is written by whoever published it; these read what only the server can write
(the ack subject of a delivery, a direct get's ``Nats-Time-Stamp``, the expected-sequence
headers it enforced), so a forged body cannot claim them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.jetstream._naming import Layout


def removal_marker(headers: Mapping[str, str], layout: Layout) -> bool:
    """Whether a message on a history subject is the marker history retention left there.

    The server writes it from the schedule a status record holds (``Store._removal``), and
    names that status subject in ``Nats-Scheduler``; it expires a second later.
    """
    scheduler = headers.get("Nats-Scheduler")
    return scheduler is not None and scheduler.startswith(layout.status_all[:-1])


def delivery_stamp(msg: Msg) -> int | None:
    """When the server stored a message a consumer delivered (ms), read from its ack subject.

    The server writes that subject, so no publisher can forge it: ``$JS.ACK.<stream>.<consumer>.
    <delivered>.<sseq>.<cseq>.<ns>.<pending>``, or with domain and account hash in front.
    """
    tokens = (msg.reply or "").split(".")
    index = 7 if len(tokens) == 9 else Msg.Ack.Timestamp
    try:
        return int(tokens[index]) // 1_000_000
    except (IndexError, ValueError):
        return None


def stored_stamp(headers: Mapping[str, str]) -> int | None:
    """When the server stored a message a direct get returned (ms): ``Nats-Time-Stamp``,
    RFC 3339 in UTC with up to nanoseconds, the same instant :func:`delivery_stamp` reads."""
    text = headers.get("Nats-Time-Stamp") or ""
    if not text.endswith("Z"):
        return None
    whole, _, fraction = text[:-1].partition(".")
    try:
        seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
        return seconds * 1000 + (int((fraction + "000")[:3]) if fraction else 0)
    except ValueError:
        return None


def verified_prev(headers: Mapping[str, str] | None, record: h.Record) -> int | None:
    """The record's ``prev`` if the server checked it on append, else None.

    ``prev`` is in the body, which the server never reads; what it checked is the
    ``Nats-Expected-Last-Subject-Sequence`` header (its first copy, which is what the
    connection reads, see ``_connection._Client``) against the message's own subject. Only when
    both agree does ``prev`` name the record just before this one.
    """
    prev = record.body.get("prev")
    headers = headers or {}
    if not isinstance(prev, int) or "Nats-Expected-Last-Subject-Sequence-Subject" in headers:
        return None
    return prev if headers.get("Nats-Expected-Last-Subject-Sequence") == str(prev) else None


def event_header(body: Mapping[str, Any]) -> str:
    if body["t"] == h.DECIDED:
        return ",".join(c["t"] for c in body.get("cmds", ()))
    return str(body["t"])


def at_schedule(epoch_seconds: float) -> str:
    """A one-time ``Nats-Schedule`` at that moment (UTC, milliseconds)."""
    at = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return "@at " + at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
