"""The dead-letter stream: messages the engine could not use, kept with the reason.

A worker that receives a message it cannot use (bytes that do not decode, a record of unknown
type or shape, a fact for a workflow that does not exist, a malformed activity task) does not
crash, retry it forever or drop it silently: it copies the message to ``DF_<ns>_DLQ`` with
headers saying why, where it came from and when, then acks it so other work goes on. Operators
read the stream with ``dfcore dlq list`` and ``dfcore dlq show SEQ`` (or :meth:`App.dead_letters`).

A message that cannot be decrypted because this process lacks the key is *not* dead-lettered:
that is a configuration problem of the process, not of the message (see ``CodecKeyError``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from dfcore.core._logfields import log_fields
from dfcore.jetstream._requests import JetStreamAPI, wrap

log = logging.getLogger("dfcore.store")

HDR_REASON = "Df-Dlq-Reason"
HDR_SOURCE = "Df-Dlq-Source"
HDR_SUBJECT = "Df-Dlq-Subject"
HDR_STREAM_SEQ = "Df-Dlq-Stream-Seq"
HDR_SIZE = "Df-Dlq-Size"
HDR_TRUNCATED = "Df-Dlq-Truncated"
HDR_HEADERS = "Df-Dlq-Headers"
HDR_TIME = "Df-Dlq-Time"

MAX_REASON = 2000
HEADER_ROOM = 8 * 1024  # bytes kept free for the headers when a large body is cut


@dataclass(frozen=True)
class DeadLetter:
    """A message the engine could not use, as kept in the dead-letter stream.

    Attributes:
        seq: its sequence in the dead-letter stream (``dfcore dlq show SEQ``).
        time: when it was dead-lettered.
        source: what consumed it: ``"history"`` (workflow tasks), ``"task"`` (activity tasks)
            or ``"cancel"`` (activity cancellation hints).
        subject: the subject it was published to.
        stream_seq: its sequence in the stream it came from (None for core NATS messages).
        reason: why the engine could not use it.
        size: its size in bytes.
        data: its body (the first bytes only, when ``truncated``).
        truncated: the body was too large to keep whole next to the headers.
        headers: the headers it was published with.
    """

    seq: int
    time: datetime | None
    source: str
    subject: str
    stream_seq: int | None
    reason: str
    size: int
    data: bytes
    truncated: bool
    headers: Mapping[str, str]

    def preview(self, limit: int = 80) -> str:
        """The start of the body, printable (``repr`` of the bytes)."""
        text = repr(self.data[:limit])
        return text + ("..." if len(self.data) > limit or self.truncated else "")


def dead_letter_headers(
    *,
    source: str,
    subject: str,
    reason: str,
    size: int,
    truncated: bool,
    stream_seq: int | None,
    headers: Mapping[str, str] | None,
) -> dict[str, str]:
    """The headers of a dead-letter message (all single-line text)."""
    out = {
        HDR_REASON: _one_line(reason)[:MAX_REASON],
        HDR_SOURCE: source,
        HDR_SUBJECT: _one_line(subject),
        HDR_SIZE: str(size),
        HDR_TIME: datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if stream_seq is not None:
        out[HDR_STREAM_SEQ] = str(stream_seq)
    if truncated:
        out[HDR_TRUNCATED] = "true"
    if headers:
        kept = {str(k): str(v) for k, v in headers.items()}
        out[HDR_HEADERS] = _one_line(orjson.dumps(kept).decode())[:MAX_REASON]
    return out


def from_message(seq: int, headers: Mapping[str, str], data: bytes) -> DeadLetter:
    """Rebuild a :class:`DeadLetter` from a message of the dead-letter stream."""
    stream_seq = headers.get(HDR_STREAM_SEQ)
    when = headers.get(HDR_TIME)
    return DeadLetter(
        seq=seq,
        time=_parse_time(when),
        source=headers.get(HDR_SOURCE, "?"),
        subject=headers.get(HDR_SUBJECT, "?"),
        stream_seq=int(stream_seq) if stream_seq and stream_seq.isdigit() else None,
        reason=headers.get(HDR_REASON, ""),
        size=_count(headers.get(HDR_SIZE), len(data)),
        data=data,
        truncated=headers.get(HDR_TRUNCATED) == "true",
        headers=_original_headers(headers.get(HDR_HEADERS)),
    )


def render_list(letters: list[DeadLetter]) -> str:
    """The ``dfcore dlq list`` table: seq, time, source, subject, reason."""
    lines = [f"{'SEQ':>6}  {'TIME':19}  {'SOURCE':7}  {'SUBJECT':40}  REASON"]
    for letter in letters:
        when = letter.time.strftime("%Y-%m-%d %H:%M:%S") if letter.time else ""
        reason = letter.reason if len(letter.reason) <= 80 else letter.reason[:77] + "..."
        lines.append(
            f"{letter.seq:>6}  {when:19}  {letter.source:7}  {letter.subject:40}  {reason}"
        )
    return "\n".join(lines)


def render_one(letter: DeadLetter) -> str:
    """The ``dfcore dlq show`` text: every field, and the body as text or hex."""
    when = letter.time.isoformat() if letter.time else "?"
    lines = [
        f"Dead letter {letter.seq}",
        f"  time:       {when}",
        f"  source:     {letter.source}",
        f"  subject:    {letter.subject}",
        f"  stream seq: {letter.stream_seq if letter.stream_seq is not None else '-'}",
        f"  reason:     {letter.reason}",
        f"  size:       {letter.size} bytes" + (" (truncated here)" if letter.truncated else ""),
    ]
    for key, value in letter.headers.items():
        lines.append(f"  header:     {key}: {value}")
    lines.append("  body:")
    lines.append(_body_text(letter.data))
    return "\n".join(lines)


def _body_text(data: bytes, limit: int = 4096) -> str:
    shown = data[:limit]
    try:
        body = shown.decode("utf-8")
    except UnicodeDecodeError:
        body = ""
    if not body or not all(c.isprintable() or c in "\n\t" for c in body):
        body = shown.hex(" ", 16)
    more = f"\n    ... ({len(data) - limit} more bytes)" if len(data) > limit else ""
    return "\n".join("    " + line for line in body.splitlines() or [""]) + more


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _count(value: str | None, default: int) -> int:
    """A count from a header; ``default`` when it is missing or not a count (a forged one)."""
    return int(value) if value and value.isdigit() else default


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _original_headers(value: str | None) -> dict[str, str]:
    if not value:
        return {}
    try:
        parsed: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {"?": value}
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


class DeadLetters:
    """The dead-letter stream of one namespace: filing messages in it, and reading it."""

    def __init__(self, api: JetStreamAPI, js: JetStreamContext) -> None:
        self.api = api
        self.js = js
        self.layout = api.layout

    async def keep(
        self,
        source: str,
        subject: str,
        data: bytes,
        reason: str,
        *,
        headers: Mapping[str, str] | None = None,
        stream_seq: int | None = None,
    ) -> None:
        """Keep a message the engine cannot use in the dead-letter stream, with the reason.

        The body is kept as it came (cut to fit next to the headers when it is huge). A
        message from a stream is deduplicated by its stream sequence, so a worker that dies
        after this and before acking does not file it twice.
        """
        limit = max(self.api.nc.max_payload - HEADER_ROOM, 1024)
        kept = data[:limit]
        out = dead_letter_headers(
            source=source,
            subject=subject,
            reason=reason,
            size=len(data),
            truncated=len(kept) < len(data),
            stream_seq=stream_seq,
            headers=headers,
        )
        # A stream message is filed once by its sequence; a core NATS message (which every
        # subscribed worker receives) once per content, within the dedup window.
        origin = str(stream_seq) if stream_seq is not None else hashlib.sha256(data).hexdigest()
        out["Nats-Msg-Id"] = f"{subject}:{origin}"
        log.error(
            "dead-lettered a message on %s (%s): %s",
            subject,
            source,
            out[HDR_REASON],
            extra=log_fields(self.layout.workflow_of(subject)),
        )
        await self.api.publish(self.layout.dlq_subject(source), kept, out, "keeping a dead letter")

    async def keep_message(self, source: str, msg: Msg, reason: str) -> None:
        """:meth:`keep` for a message delivered by one of the engine's consumers."""
        await self.keep(
            source,
            msg.subject,
            msg.data,
            reason,
            headers=msg.headers,
            stream_seq=msg.metadata.sequence.stream,
        )

    async def newest(self, limit: int = 50) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        stream = self.layout.dlq_stream
        try:
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return []
        except Exception as exc:
            raise wrap(exc, "reading dead letters") from exc
        first, last = info.state.first_seq, info.state.last_seq
        if not info.state.messages:
            return []
        start = max(first, last - limit + 1)
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            request = {"seq": start, "next_by_subj": self.layout.dlq_all, "batch": limit}
            msgs, more = await self.api.direct_get(request, stream=stream)
            letters += [_letter(msg) for msg in msgs]
            if not more or not msgs:
                break
            start = int(msgs[-1].headers["Nats-Sequence"]) + 1
        return letters[-limit:]

    async def at(self, seq: int) -> DeadLetter | None:
        """The dead letter with sequence ``seq``, or None."""
        msg = await self.api.get_one(
            {"seq": seq}, f"dead letter {seq}", stream=self.layout.dlq_stream
        )
        return None if msg is None else _letter(msg)


def _letter(msg: Msg) -> DeadLetter:
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    return from_message(int(headers.get("Nats-Sequence", 0)), headers, msg.data)
