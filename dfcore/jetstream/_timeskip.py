"""Time skipping, for tests: fire a durable timer now instead of at its time.

A pending timer is a message on ``<ns>.timer.<queue>.<wf>.<timer>`` that the server will append
to its history at the time in its ``Nats-Schedule`` header (see ``Store.schedule_timer``). Firing
it early appends the same bytes to the same history, as the server would, and removes the
schedule, so the worker sees an ordinary ``TimerFired`` record through the real engine. The
workflow's clock (``ctx.now()``) still follows the server's stamps: skipping moves no clock.

Used by :mod:`dfcore.testing`; nothing in the engine depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dfcore.core import _history as h
from dfcore.jetstream._requests import wrap
from dfcore.jetstream._store import Store


@dataclass(frozen=True)
class PendingTimer:
    """A durable timer the server has not fired yet."""

    subject: str  # its schedule's subject
    history_subject: str  # the history it fires into
    fire_at: datetime
    data: bytes  # the TimerFired record, encoded, as the server will append it


async def pending_timers(store: Store) -> list[PendingTimer]:
    """Every pending timer of the namespace, the earliest first."""
    subjects = await store.subjects(store.layout.timers_all, "listing timers")
    timers: list[PendingTimer] = []
    for msg in await store.last_messages(subjects):
        headers = msg.headers or {}
        schedule, target = headers.get("Nats-Schedule", ""), headers.get("Nats-Schedule-Target")
        if not schedule.startswith("@at ") or not target:
            continue
        when = datetime.fromisoformat(schedule[4:].replace("Z", "+00:00")).astimezone(UTC)
        timers.append(PendingTimer(str(headers.get("Nats-Subject")), target, when, msg.data))
    return sorted(timers, key=lambda timer: (timer.fire_at, timer.subject))


async def fire_now(store: Store, timer: PendingTimer) -> None:
    """Append ``timer``'s TimerFired record to its history now, and drop its schedule.

    Appended first: a skip that dies in between leaves the schedule, whose later firing the
    engine ignores (a timer fires once), rather than a timer that never fires.
    """
    headers = {h.HDR_EVENT: h.TIMER_FIRED, "Nats-Msg-Id": f"{timer.subject}:skipped"}
    await store.api.publish(timer.history_subject, timer.data, headers, "firing a timer now")
    await store.purge(timer.subject)


async def workers_idle(store: Store) -> bool:
    """Whether no message of the namespace waits for a worker or is being worked on.

    Every consumer of the history and task streams (workflow partitions, activity queues,
    admissions) has nothing pending and nothing unacknowledged: each decision is acked after
    the tasks and timers it implies are published, and each activity after its outcome is
    appended, so nothing is in between.
    """
    lay = store.layout
    for stream in (lay.history_stream, lay.tasks_stream):
        try:
            consumers = await store.js.consumers_info(stream)
        except Exception as exc:
            raise wrap(exc, "reading the consumers") from exc
        if any(c.num_pending or c.num_ack_pending for c in consumers):
            return False
    return True
