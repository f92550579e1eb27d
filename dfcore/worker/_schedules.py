"""Schedules, worker side: each tick the server publishes starts the workflows of its time.

Every workflow worker pulls from the one shared consumer ``sched`` (``<ns>.sched.*.tick``), so
any number of workers, on any number of machines, run schedules with nothing to run once: a
tick goes to one of them, and the workflow of a time has the id ``<schedule>@<time>``, whose
start is idempotent (a second start of the id starts nothing). The schedule's record is then
replaced, checked against the sequence read, with its next time, which arms the next tick.
A worker that dies halfway leaves the tick unacked: whoever gets it again does the same, and
the same ids start nothing twice.

A workflow a schedule started names it in its start; when it ends, its worker sends the
schedule an ``ended`` tick, which starts the time buffered behind it (``overlap="buffer_one"``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from nats.aio.msg import Msg

from dfcore.client._client import append_start
from dfcore.client._start import prepare_start
from dfcore.core._errors import CodecUnavailableError, DFConnectionError, DFError
from dfcore.core._history import now_ms
from dfcore.core._logfields import log_fields
from dfcore.core._observe import Observers
from dfcore.core._schedules import (
    MAX_CATCH_UP,
    SCHEDULE_ID,
    ScheduleSpec,
    ScheduleState,
    iso,
    plan,
)
from dfcore.jetstream._requests import AppendConflict
from dfcore.jetstream._schedules import read_tick
from dfcore.worker._delivery import retry_delay
from dfcore.worker._storage import WorkerStore

log = logging.getLogger("dfcore.schedules")

_TRIES = 10  # conflicting writers of one schedule's record before the tick is handed back
IN_FLIGHT_MS = 60_000  # a time this recent has its tick on its way, not lost
REARM_EVERY = 60.0  # seconds between a worker's checks that every schedule is armed


class ScheduleRunner:
    """Handles the ticks of every schedule of a namespace (the ``sched`` consumer)."""

    def __init__(
        self, store: WorkerStore, default_queue: str, codec: Any, observers: Observers
    ) -> None:
        self.store = store
        self.default_queue = default_queue
        self.codec = codec
        self.observers = observers

    async def handle(self, msg: Msg) -> None:
        try:
            schedule_id = self.store.layout.parse_schedule_tick(msg.subject)
            kind, value = read_tick(msg)
        except (ValueError, DFError) as exc:
            await self.store.dlq.keep_message("schedule", msg, str(exc))
            await msg.ack()
            return
        try:
            for _ in range(_TRIES):
                try:
                    await self._handle(schedule_id, kind, value)
                    break
                except AppendConflict:
                    continue  # another writer changed the schedule: read it again
            else:
                raise DFError("its record kept changing while this tick was handled")
        except DFError as exc:
            log.warning("schedule %s: %s; will retry", schedule_id, exc, extra=_fields(schedule_id))
            await msg.nak(delay=retry_delay(msg.metadata.num_delivered))
            return
        await msg.ack()

    async def _handle(self, schedule_id: str, kind: str, value: Any) -> None:
        records = self.store.schedules
        state, seq = await records.get(schedule_id)
        if state is None:
            return  # deleted
        if kind == "ended":
            new = await self._after_end(state, str(value))
        else:
            new = await self._fire(state, int(value))
        if new is None:
            return
        await records.put(new, seq)
        if new.buffered_ms is not None and not await self._running(new):
            await self._poke(new)  # it ended before the buffered time was written down

    async def _fire(self, state: ScheduleState, at: int) -> ScheduleState | None:
        spec = state.spec
        if state.paused or state.next_ms != at:
            mine = spec.workflow_id(at)  # started by this tick before the record changed?
            if state.last_workflow_id != mine and await self._running(
                state.evolve(last_workflow_id=mine)
            ):
                return state.evolve(last_workflow_id=mine)  # so the overlap policy sees it
            if not state.paused and state.next_ms is not None:
                await self.store.schedules.arm(state)  # a tick of an older spec: re-arm
            return None
        now = now_ms()
        due = [at, *spec.times(at, now, MAX_CATCH_UP)]
        running = await self._running(state)
        decision = plan(spec, due, now, running, state.buffered_ms)
        started = [t for t in decision.start if await self._start(spec, t)]
        last = spec.workflow_id(started[-1]) if started else state.last_workflow_id
        note = _note(spec, started, decision.skipped, decision.buffered_ms)
        if len(started) < len(decision.start):
            note += "; some times could not start (see the workers' log)"
        one = spec.workflow_id(started[0]) if len(started) == 1 else None
        log.info("schedule %s: %s", spec.schedule_id, note, extra=_fields(spec, one))
        return state.evolve(
            next_ms=spec.next_after(max(now, due[-1])),
            last_workflow_id=last,
            buffered_ms=decision.buffered_ms,
            note=note,
        )

    async def _after_end(self, state: ScheduleState, ended: str) -> ScheduleState | None:
        """The workflow ``ended`` of the schedule ended: start the time buffered behind it."""
        if state.buffered_ms is None or state.last_workflow_id != ended or state.paused:
            return None
        at = state.buffered_ms
        if not await self._start(state.spec, at):
            return state.evolve(buffered_ms=None, note=f"could not start {iso(at)}")
        spec, started = state.spec, state.spec.workflow_id(at)
        note = f"started {started} (buffered behind {ended})"
        log.info("schedule %s: %s", spec.schedule_id, note, extra=_fields(spec, started))
        return state.evolve(last_workflow_id=started, buffered_ms=None, note=note)

    async def _running(self, state: ScheduleState) -> bool:
        """Whether the last workflow the schedule started is still running."""
        if state.last_workflow_id is None:
            return False
        queue = state.spec.task_queue or self.default_queue
        subject = self.store.layout.history_subject(queue, state.last_workflow_id)
        if await self.store.last_seq(subject) == 0:
            return False  # gone (removed after its retention) or never made
        return await self.store.outcome(subject) is None

    async def _poke(self, state: ScheduleState) -> None:
        if state.last_workflow_id is not None:
            workflow_id = state.last_workflow_id
            await send_ended(self.store, state.spec.schedule_id, workflow_id, "poke")

    async def _start(self, spec: ScheduleSpec, at: int) -> bool:
        """Start the workflow of time ``at`` (nothing if it exists: the id is the time's).

        False when this time can never start (its arguments cannot be sent, or a stray
        message holds its id): the schedule goes on without it, rather than retry for ever.
        """
        store = self.store
        workflow_id = spec.workflow_id(at)
        try:
            start = prepare_start(
                self.codec,
                spec.workflow,
                list(spec.args),
                workflow_id=workflow_id,
                task_queue=spec.task_queue or self.default_queue,
                execution_timeout=None,
                max_payload=store.max_payload,
                schedule=spec.schedule_id,
                observers=self.observers,
            )
            await append_start(store, start, "use_existing")  # nothing if it exists
        except (DFConnectionError, CodecUnavailableError):
            raise  # passing: the tick is handed back and tried again
        except DFError as exc:
            fields = _fields(spec, workflow_id)
            log.error(
                "schedule %s: cannot start %s: %s", spec.schedule_id, workflow_id, exc, extra=fields
            )
            return False
        return True


async def send_ended(
    store: WorkerStore,
    schedule_id: str,
    workflow_id: str,
    why: str = "ended",
    fields: Mapping[str, Any] | None = None,
) -> None:
    """Tell schedule ``schedule_id`` that the workflow it started, ``workflow_id``, ended
    (``why``: ``ended``, from its worker; ``poke``, from a tick that saw it end meanwhile;
    ``fields``: the workflow's, for the log lines)."""
    if not SCHEDULE_ID.fullmatch(schedule_id):
        extra = fields if fields is not None else log_fields(workflow_id)
        log.warning("ignoring the schedule a workflow's start names: %r", schedule_id, extra=extra)
        return
    subject = store.layout.schedule_tick_subject(schedule_id)
    headers = {"Nats-Msg-Id": f"{subject}:{why}:{workflow_id}", "Nats-TTL": "86400s"}
    body = orjson.dumps({"ended": workflow_id})
    await store.api.publish(subject, body, headers, f"telling schedule {schedule_id}")


def _fields(of: ScheduleSpec | str, workflow_id: str | None = None) -> dict[str, Any]:
    """``extra=`` of a schedule's line: the schedule's id, and the workflow of one of its
    times (the first run of its type) when the line is about one."""
    if isinstance(of, str):
        return log_fields(None, schedule=of)
    run, kind = (1, of.workflow) if workflow_id is not None else (None, None)
    return log_fields(workflow_id, run=run, workflow_type=kind, schedule=of.schedule_id)


def _note(spec: ScheduleSpec, started: list[int], skipped: list[int], buffered: int | None) -> str:
    parts = []
    if started:
        parts.append("started " + ", ".join(spec.workflow_id(t) for t in started))
    if buffered is not None:
        parts.append(f"buffered {iso(buffered)} until the last one ends")
    if skipped:
        shown = ", ".join(iso(t) for t in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        parts.append(f"skipped {len(skipped)} time(s) ({shown}) by its policies")
    return "; ".join(parts) or "nothing to start"


async def reconcile(store: WorkerStore, declared: list[ScheduleSpec]) -> None:
    """Bring the namespace's schedules up to what the code and settings declare, and re-arm
    every schedule's next time (one lost to a crash between a record and its arming).

    A declared schedule that is missing is created; one whose spec changed (a deploy) gets the
    new spec and keeps its pause, its last workflow and what it buffered.
    """
    records = store.schedules
    for spec in declared:
        for _ in range(_TRIES):
            state, seq = await records.get(spec.schedule_id)
            now = now_ms()
            if state is None:
                new = ScheduleState(spec, next_ms=spec.next_after(now), note="declared")
            elif not state.spec.same_as(spec):
                next_ms = None if state.paused else spec.next_after(now)
                new = state.evolve(spec=spec, next_ms=next_ms, note="spec changed in the code")
            else:
                break
            try:
                await records.put(new, seq)
                log.info(
                    "schedule %s: %s (%s)",
                    spec.schedule_id,
                    new.note,
                    spec.describe(),
                    extra=_fields(spec),
                )
                break
            except AppendConflict:
                continue
    await rearm(store)


async def rearm(store: WorkerStore) -> int:
    """Arm every schedule whose next time the server does not hold (a write lost to a crash
    or a race); the workers do it when they start and every minute. Returns how many."""
    records = store.schedules
    fixed = 0
    for listed in await records.all():
        state, _ = await records.get(listed.spec.schedule_id)  # as it is now, not as listed
        if state is None or await records.armed(state):
            continue
        if state.next_ms is not None and 0 <= now_ms() - state.next_ms < IN_FLIGHT_MS:
            continue  # it fired just now: its tick is on its way, and moves it on
        await records.arm(state)
        log.warning(
            "schedule %s: its next time was not armed; armed it",
            state.spec.schedule_id,
            extra=_fields(state.spec),
        )
        fixed += 1
    return fixed
