"""Schedules in JetStream: one record per schedule, and a one-time message schedule for its next
time.

``<ns>.sched.<id>.state`` holds the schedule's :class:`ScheduleState`, replaced on every change
(a rollup, with the expected-last-subject-sequence check, so two writers never both win).
``<ns>.sched.<id>.at`` holds one message with ``Nats-Schedule: @at <next time>``; at that time
the server publishes its body to ``<ns>.sched.<id>.tick``, which workers consume (``sched``).
Arming replaces that message (a rollup), disarming replaces it with one that expires a second
later, so the server keeps at most one pending time per schedule, across its own restarts.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from nats.aio.msg import Msg

from dfcore.core._errors import CodecUnavailableError, ConfigurationError, DFError, PayloadError
from dfcore.core._schedules import ScheduleState
from dfcore.jetstream._naming import Layout
from dfcore.jetstream._requests import JetStreamAPI, wrap
from dfcore.jetstream._stamps import at_schedule

log = logging.getLogger("dfcore.store")

TICK_TTL = "86400s"  # a tick nobody took for a day is re-armed by the next worker to start
_DELETED = "ScheduleDeleted"


class ScheduleRecords:
    """Reads and writes schedules; ``encode`` / ``decode`` are the store's (its codec)."""

    def __init__(self, api: JetStreamAPI, js: Any, layout: Layout, encode: Any, decode: Any):
        self.api = api
        self.js = js
        self.layout = layout
        self._encode = encode
        self._decode = decode

    async def get(self, schedule_id: str) -> tuple[ScheduleState | None, int]:
        """The schedule and the sequence of its record (0 when it never existed)."""
        subject = self.layout.schedule_subject(schedule_id)
        msg = await self.api.get_one({"last_by_subj": subject}, subject)
        if msg is None:
            return None, 0
        return self._state(msg), int((msg.headers or {}).get("Nats-Sequence", 0))

    def _state(self, msg: Msg) -> ScheduleState | None:
        try:
            body = self._decode(msg.data, "a schedule")
            if isinstance(body, dict) and body.get("t") == _DELETED:
                return None
            return ScheduleState.from_wire(body)
        except CodecUnavailableError:
            raise  # this process lacks the key: the record is fine, and must not be skipped
        except (PayloadError, ValueError, ConfigurationError) as exc:
            log.warning("ignoring an unreadable schedule record on %s: %s", msg.subject, exc)
            return None

    async def put(self, state: ScheduleState, expected_seq: int) -> int:
        """Replace the schedule's record, if it is still at ``expected_seq``; then arm (or
        disarm) its next time.

        Raises:
            AppendConflict: someone changed it first; read it again and retry.
        """
        schedule_id = state.spec.schedule_id
        subject = self.layout.schedule_subject(schedule_id)
        headers = {
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(expected_seq),
        }
        data = self._encode(state.to_wire(), f"schedule {schedule_id!r}")
        seq: int = await self.api.publish(subject, data, headers, f"saving {subject}")
        await self.arm(state)
        fresh, fresh_seq = await self.get(schedule_id)
        if fresh is not None and fresh_seq != seq:
            await self.arm(fresh)  # changed meanwhile, and that writer may have armed first
        return seq

    async def delete(self, schedule_id: str, expected_seq: int) -> None:
        subject = self.layout.schedule_subject(schedule_id)
        headers = {
            "Nats-Rollup": "sub",
            "Nats-Expected-Last-Subject-Sequence": str(expected_seq),
        }
        data = self._encode({"t": _DELETED}, "a deleted schedule")
        await self.api.publish(subject, data, headers, f"deleting {subject}")
        await self._disarm(schedule_id)

    async def arm(self, state: ScheduleState) -> None:
        """Make the server publish the tick of ``state``'s next time (idempotent)."""
        schedule_id = state.spec.schedule_id
        if state.paused or state.next_ms is None:
            await self._disarm(schedule_id)
            return
        headers = {
            "Nats-Schedule": at_schedule(state.next_ms / 1000),
            "Nats-Schedule-Target": self.layout.schedule_tick_subject(schedule_id),
            "Nats-Schedule-TTL": TICK_TTL,
            "Nats-Rollup": "sub",
        }
        body = orjson.dumps({"at": state.next_ms})
        subject = self.layout.schedule_at_subject(schedule_id)
        await self.api.publish(subject, body, headers, f"arming {subject}")

    async def armed(self, state: ScheduleState) -> bool:
        """Whether the server holds the message schedule of ``state``'s next time (or, for a
        paused schedule, none)."""
        subject = self.layout.schedule_at_subject(state.spec.schedule_id)
        msg = await self.api.get_one({"last_by_subj": subject}, subject)
        pending = msg is not None and "Nats-Schedule" in (msg.headers or {})
        if state.paused or state.next_ms is None:
            return not pending
        try:
            return pending and orjson.loads(msg.data).get("at") == state.next_ms  # type: ignore[union-attr]
        except (orjson.JSONDecodeError, AttributeError):
            return False

    async def _disarm(self, schedule_id: str) -> None:
        subject = self.layout.schedule_at_subject(schedule_id)
        headers = {"Nats-Rollup": "sub", "Nats-TTL": "1s"}
        await self.api.publish(subject, b"", headers, f"disarming {subject}")

    async def all(self) -> list[ScheduleState]:
        """Every schedule of the namespace, by id."""
        states = self.layout.schedule_states
        try:
            info = await self.js.stream_info(self.layout.history_stream, subjects_filter=states)
        except Exception as exc:
            raise wrap(exc, "listing schedules") from exc
        subjects = sorted((info.state.subjects or {}).keys())
        out: list[ScheduleState] = []
        for start in range(0, len(subjects), 200):
            chunk = subjects[start : start + 200]
            msgs, _ = await self.api.direct_get({"multi_last": chunk, "batch": len(chunk)})
            out += [s for s in (self._state(m) for m in msgs) if s is not None]
        return sorted(out, key=lambda s: s.spec.schedule_id)


def read_tick(msg: Msg) -> tuple[str, int | str]:
    """``("at", time)`` for a time the server published, ``("ended", workflow id)`` for the
    end of a workflow the schedule started; raises DFError if the message is neither."""
    try:
        body = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        raise DFError(f"not a schedule tick: {msg.data[:80]!r}") from None
    at = body.get("at") if isinstance(body, dict) else None
    if isinstance(at, int) and not isinstance(at, bool) and at >= 0:
        return "at", at
    ended = body.get("ended") if isinstance(body, dict) else None
    if isinstance(ended, str) and ended:
        return "ended", ended
    raise DFError(f"not a schedule tick: {msg.data[:80]!r}")
