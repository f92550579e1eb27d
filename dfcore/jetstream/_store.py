"""JetStream storage of the engine's records: histories, outcomes, starts, tasks and timers.

:class:`Store` is what the client and the worker use (``dfcore/jetstream`` is its only
implementation). The rest of the package is its parts, one concern each: ``_requests`` (the
JetStream API calls), ``_streams`` (streams and consumers), ``_dlq`` (dead letters),
``_stamps`` (what the server stamped on a message), ``_naming`` (subjects).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._codec import JSONConverter, PayloadCodec, check_size, safe_decode, safe_encode
from dfcore.core._config import Settings
from dfcore.core._errors import CodecUnavailableError, DFError, PayloadError, WorkflowNotFoundError
from dfcore.core._facts import TimerFired, status_pointer
from dfcore.core._logfields import log_fields
from dfcore.core._observe import trace_headers
from dfcore.jetstream._dlq import DeadLetters
from dfcore.jetstream._follow import Follower
from dfcore.jetstream._index import WorkflowIndex
from dfcore.jetstream._naming import Layout, workflow_id_from_token
from dfcore.jetstream._requests import AppendConflict, JetStreamAPI, wrap
from dfcore.jetstream._runs import RunCopies
from dfcore.jetstream._schedules import ScheduleRecords
from dfcore.jetstream._stamps import (
    at_schedule,
    delivery_stamp,
    event_header,
    removal_marker,
    stored_stamp,
    verified_prev,
)
from dfcore.jetstream._streams import Streams
from dfcore.jetstream._workers import QueueInfo, WorkerInfo, ask_workers, queue_stats

__all__ = ["AppendConflict", "Store", "delivery_stamp", "verified_prev"]

log = logging.getLogger("dfcore.store")

CHAINED_TRIES = 3  # conflicts of a chained fact before it is appended unchained (append_fact)
HEADROOM = 512  # bytes of headers and protocol framing on top of the body


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
        self.api = JetStreamAPI(nc, self.layout)
        self.streams = Streams(self.api, self.js, settings)
        self.dlq = DeadLetters(self.api, self.js)
        self.schedules = ScheduleRecords(self.api, self.js, self.layout, self.encode, self.decode)
        self.index = WorkflowIndex(
            self.api, self.js, self.layout, self.encode, self.decode, self._retention
        )
        self.runs = RunCopies(self, self._retention)
        self._replies = self.api.replies
        self._ensured = False

    def _retention(self) -> float | None:
        """How long an ended workflow is kept, when the server removes it (else None)."""
        return self.settings.history_retention if self.streams.removes_histories else None

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

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
        await self.streams.ensure()
        await self._replies.start()
        self._ensured = True

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
        rollup: bool = False,
        trace: Mapping[str, str] | None = None,
    ) -> int:
        """Append one record; return its stream sequence.

        ``rollup``: the server deletes every earlier record of the subject as it stores this
        one (a continued run's start). ``trace``: trace headers (a start's; see ``_observe``).

        Raises:
            AppendConflict: ``expected_seq`` no longer matches the subject's last sequence.
        """
        headers = {**(trace or {}), h.HDR_EVENT: event_header(body)}
        if rollup:
            headers["Nats-Rollup"] = "sub"
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        if expected_seq is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
        if expected_subject is not None:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subject
        if status is not None:
            headers[h.HDR_STATUS] = status
        payload = data if data is not None else self.encode(body, f"{body['t']} record")
        return await self.api.publish(subject, payload, headers, f"appending to {subject}")

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
                raise WorkflowNotFoundError(
                    workflow_id_from_token(subject.rsplit(".", 1)[-1]),
                    self.settings.namespace,
                    detail=f"no workflow has the history {subject}: it was never started, so "
                    f"the {body['t']} cannot be recorded",
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
            raise wrap(exc, f"looking up {subject}") from exc
        return bool((info.state.subjects or {}).get(subject))

    async def last_seq(self, subject: str) -> int:
        """The stream sequence of the last record on ``subject`` (0 when there is none)."""
        msg = await self.api.get_one({"last_by_subj": subject}, subject)
        return int(msg.headers["Nats-Sequence"]) if msg is not None else 0  # type: ignore[index]

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
            msgs, more = await self.api.direct_get(
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
        last = await self.api.get_one({"last_by_subj": subject}, subject)
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
            msg = await self.api.get_one({"seq": prev}, subject)
        return await self.read(subject, after_seq)

    async def last(self, subject: str) -> tuple[str, h.Record] | None:
        """The subject and last record of a history subject (wildcards allowed), or None."""
        msg = await self.api.get_one({"last_by_subj": subject}, subject)
        record = self._record_from(msg) if msg is not None else None
        if msg is None or record is None:
            return None
        return str(msg.headers["Nats-Subject"]), record  # type: ignore[index]

    async def first(self, subject: str) -> h.Record | None:
        """The first record on ``subject`` (its ``WorkflowStarted``), or None."""
        msg = await self.api.get_one({"seq": 1, "next_by_subj": subject}, subject)
        return self._record_from(msg) if msg is not None else None

    async def mark_ended(self, history_subject: str, decision: Mapping[str, Any], seq: int) -> None:
        """Record a workflow's outcome on its status subject (idempotent)."""
        lay = self.layout
        queue, workflow_id = lay.parse_history_subject(history_subject)
        body = status_pointer(decision, seq)
        status = h.terminal_status(decision["cmds"]) or "ended"
        headers = {
            h.HDR_EVENT: event_header(body),
            h.HDR_STATUS: status,
            "Nats-Msg-Id": f"{history_subject}:status",
            **self._removal(history_subject),
        }
        data = self.encode(body, "workflow outcome")
        await self.api.publish(
            lay.status_subject(queue, workflow_id), data, headers, "recording an outcome"
        )

    def _removal(self, history_subject: str) -> dict[str, str]:
        """Headers that make a status record remove its workflow once ``history_retention``
        has passed (none when it is 0).

        The status record then also holds a schedule: at its time the server writes a marker
        onto the history subject that rolls up (deletes) every record before it, drops the
        status record (a one-time schedule is removed once it fired), and the marker expires
        a second later. No process has to run then, a restarted server keeps the schedule, and
        it costs no request of its own. Running workflows have no status record to hold one.
        """
        retention = self.settings.history_retention
        if not self.streams.removes_histories:
            return {}  # 0, or a server too old for it (Streams says why)
        return {
            "Nats-Schedule": at_schedule(time.time() + retention),
            "Nats-Schedule-Target": history_subject,
            "Nats-Schedule-Rollup": "sub",
            "Nats-Schedule-TTL": "1s",
        }

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
        msg = await self.api.get_one({"seq": seq}, history)
        if msg is None or (msg.headers or {}).get("Nats-Subject") != history:
            return None
        decision = self._record_from(msg)
        if decision is None or not h.terminal_status(decision.commands):
            return None
        return decision

    async def last_subject(self, subject_filter: str) -> str | None:
        """The subject of the last message matching ``subject_filter``, readable or not."""
        msg = await self.api.get_one({"last_by_subj": subject_filter}, subject_filter)
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
        await self.purge(self.layout.timers_of(queue, workflow_id))

    async def purge_run_timers(self, history_subject: str, run: int) -> None:
        """Drop the pending timers of one run (it continued as new), not the next run's."""
        queue, workflow_id = self.layout.parse_history_subject(history_subject)
        await self.purge(self.layout.timers_of_run(queue, workflow_id, run))

    async def purge(self, subject_filter: str) -> None:
        """Remove every message of the history stream on ``subject_filter``."""
        request = orjson.dumps({"filter": subject_filter})
        subject = f"$JS.API.STREAM.PURGE.{self.layout.history_stream}"
        reply = await self._replies.request(subject, request, None)
        error = orjson.loads(reply.data).get("error")
        if error:
            raise DFError(
                f"JetStream refused to purge {subject_filter}: {error.get('description')}"
            )

    async def last_many(self, subjects: list[str]) -> list[tuple[str, h.Record]]:
        """The last record of each subject (for listings)."""
        out: list[tuple[str, h.Record]] = []
        for msg in await self.last_messages(subjects):
            record = self._record_from(msg)
            if record is not None:
                out.append((str((msg.headers or {}).get("Nats-Subject")), record))
        return out

    async def last_messages(self, subjects: list[str]) -> list[Msg]:
        """The last message of each subject, as stored (batched direct gets)."""
        out: list[Msg] = []
        for chunk in _chunks(subjects, 200):
            msgs, _ = await self.api.direct_get({"multi_last": chunk, "batch": len(chunk)})
            out += msgs
        return out

    async def follow(self, subject: str) -> Follower:
        return await Follower.start(self.js, self.layout.history_stream, subject)

    async def ask_workers(self, window: float) -> list[WorkerInfo]:
        return await ask_workers(self.nc, self.layout, window)

    async def queue_stats(self) -> list[QueueInfo]:
        return await queue_stats(self.js, self.layout)

    async def history_subjects(self) -> list[str]:
        return await self.subjects(self.layout.history_all, "listing workflows")

    async def subjects(self, subject_filter: str, doing: str) -> list[str]:
        """The subjects of the history stream matching ``subject_filter`` that hold messages."""
        try:
            info = await self.js.stream_info(
                self.layout.history_stream, subjects_filter=subject_filter
            )
        except Exception as exc:
            raise wrap(exc, doing) from exc
        return list((info.state.subjects or {}).keys())

    def _record_from(self, msg: Msg) -> h.Record | None:
        headers = msg.headers or {}
        if removal_marker(headers, self.layout):
            return None  # retention removed the workflow's records: nothing left to read
        seq = int(headers.get("Nats-Sequence", 0))
        try:
            body = self.decode(msg.data, f"history message {seq}")
            record = h.validate_record(seq, body, stored_stamp(headers))
            if record.type == h.WORKFLOW_STARTED:
                return dataclasses.replace(
                    record, opens=self._opens(headers), trace=trace_headers(headers)
                )
            return record
        except CodecUnavailableError:
            raise  # this process lacks a key: nothing may be skipped, retry once it is fixed
        except (PayloadError, h.MalformedRecordError) as exc:
            subject = headers.get("Nats-Subject")
            log.warning(  # its delivery dead-lettered it; every replay steps over it
                "skipping unreadable history message %s on %s: %s",
                seq,
                subject,
                exc,
                extra=log_fields(self.layout.workflow_of(subject)),
            )
            return None

    def _opens(self, headers: Mapping[str, str]) -> bool:
        subject = headers.get("Nats-Subject", "")
        try:
            return self.is_first_record(headers, subject)
        except ValueError:
            return False  # not a history subject

    # -- dead letters -----------------------------------------------------------------------

    def is_first_record(self, headers: Mapping[str, str] | None, history_subject: str) -> bool:
        """Whether a stored message's headers prove it is the first record of its history.

        A start is appended with ``Nats-Expected-Last-Subject-Sequence: 0``, checked against
        its own subject or against ``<ns>.history.*.<p>.<wf>``; the server stored it only if that
        held, and keeps the headers. Checked against any other subject it proves nothing. A
        continued run's start rolled up (deleted) every record before it on its subject.
        """
        if headers and headers.get("Nats-Rollup") == "sub":
            return True
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
            msg = await self.api.get_one({"seq": 1, "next_by_subj": subject_filter}, subject_filter)
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
        msg = await self.api.get_one({"seq": seq}, history_subject)
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
        await self.api.publish(subject, data, {"Nats-Msg-Id": msg_id}, f"requeueing on {subject}")

    # -- tasks and timers -------------------------------------------------------------------

    async def publish_task(
        self,
        queue: str,
        body: Mapping[str, Any],
        msg_id: str,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        data = self.encode(body, f"activity task {body.get('activity')!r}")
        headers = {**(trace or {}), "Nats-Msg-Id": msg_id}
        await self.api.publish(
            self.layout.task_subject(queue), data, headers, f"publishing a task to {queue!r}"
        )

    async def schedule_timer(
        self, history_subject: str, timer_id: str, fire_at_ms: int, run: int = 1
    ) -> None:
        """Have the server append a TimerFired record to the history at ``fire_at_ms``."""
        queue, workflow_id = self.layout.parse_history_subject(history_subject)
        body = TimerFired(timer_id, fire_at_ms, run).to_wire()
        of_run = f"#{run}" if run > 1 else ""
        headers = {
            "Nats-Schedule": at_schedule(fire_at_ms / 1000),
            "Nats-Schedule-Target": history_subject,
            "Nats-Msg-Id": f"{history_subject}:timer:{timer_id}{of_run}",
            h.HDR_EVENT: h.TIMER_FIRED,
        }
        subject = self.layout.timer_subject(queue, workflow_id, timer_id, run)
        await self.api.publish(
            subject, self.encode(body, "timer"), headers, f"scheduling timer {timer_id}"
        )


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
