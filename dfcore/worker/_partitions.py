"""Affinity: each partition of a queue's workflow tasks is served by one worker process.

A workflow's records all land in one of the :data:`~dfcore.jetstream._naming.PARTITIONS`
partitions (a hash of its id), and each partition is its own consumer. The worker processes
serving a queue hear each other's heartbeats on ``<ns>.workers.<queue>`` and agree, from the
set of live members alone, on who serves which partition (:func:`assign`): a balanced share
each. A process pulls only its own partitions, so a workflow's steps keep reaching the process
that has it cached.

JetStream enforces the split: the consumers are pinned-client priority groups, so while views
of the membership differ (a process just started, or another just died) the server still
delivers a partition to one process at a time, and a process that stopped pulling (killed, or
frozen) loses its pin after ``workflow_ack_wait / 2``. A process that stops gracefully says so
and releases its pins at once. docs/architecture.md, "Affinity", has the reasoning and the
failure cases.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import zlib
from collections.abc import Callable, Collection, Sequence

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dfcore.core._errors import DFError
from dfcore.jetstream._naming import PARTITIONS
from dfcore.jetstream._pull import PullConsumer
from dfcore.jetstream._streams import PIN_GROUP
from dfcore.worker._storage import WorkerStore
from dfcore.worker._workflow_tasks import WorkflowProcessor

log = logging.getLogger("dfcore.worker")

_MAX_MEMBER_ID = 64
_MISSED_BEATS = 3  # heartbeats a member may miss before the others presume it dead
# Lifetime of a pull for deferred starts: one that comes back empty shows the queue is empty,
# and the room it asked for is free again for new starts.
_PROBE_EXPIRES = 2.0


def assign(members: Collection[str], partitions: int = PARTITIONS) -> dict[int, str]:
    """Who serves each partition: every member ``partitions // len(members)`` or one more.

    Deterministic in the set of members, so every process that sees the same members agrees
    without talking. Each partition goes to the member that ranks it highest (rendezvous
    hashing) among those with room, so a member joining or leaving moves few partitions.
    """
    ranked = sorted(members)
    if not ranked:
        return {}
    base, extra = divmod(partitions, len(ranked))
    load = dict.fromkeys(ranked, 0)
    owners: dict[int, str] = {}
    for partition in range(partitions):
        for member in sorted(ranked, key=lambda m: _score(m, partition), reverse=True):
            full = base + 1 if extra else base
            if load[member] < full:
                owners[partition] = member
                load[member] += 1
                if load[member] == base + 1:
                    extra -= 1
                break
    return owners


def _score(member: str, partition: int) -> int:
    return zlib.crc32(f"{member}/{partition}".encode())


class Membership:
    """The worker processes serving one queue's workflows, from the heartbeats they publish.

    Each process publishes ``{"id": ...}`` every ``interval`` seconds on ``subject`` (core
    NATS: nothing is stored), a ``hello`` when it starts, which the others answer at once, and
    ``leaving`` when it stops. A member not heard from for three intervals is presumed dead.
    ``on_change`` is called whenever the set changes.
    """

    def __init__(
        self,
        nc: Client,
        subject: str,
        interval: float,
        on_change: Callable[[], None],
    ) -> None:
        self.id = secrets.token_hex(6)
        self._nc = nc
        self._subject = subject
        self._interval = interval
        self._dead_after = _MISSED_BEATS * interval
        self._on_change = on_change
        self._seen: dict[str, float] = {}
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    def members(self) -> list[str]:
        """The live members, this process included."""
        return sorted({*self._seen, self.id})

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_heartbeat)
        await self._beat(hello=True)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Tell the others this process is leaving, so they take its partitions at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._beat(leaving=True)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("membership: unsubscribe failed: %s", exc)

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            if now - last > self._dead_after:
                log.warning(
                    "this worker was paused for %.1f s (the others presume a worker dead after "
                    "%.1f s), so its workflows may have moved to them; rejoining",
                    now - last,
                    self._dead_after,
                )
                # The silence was ours: give the others a fresh chance to be heard.
                self._seen = dict.fromkeys(self._seen, now)
            last = now
            await self._beat()
            gone = [m for m, seen in self._seen.items() if now - seen > self._dead_after]
            for member in gone:
                log.info("worker %s stopped sending heartbeats; presumed dead", member)
                del self._seen[member]
            if gone:
                self._on_change()

    async def _beat(self, *, hello: bool = False, leaving: bool = False) -> None:
        body: dict[str, object] = {"id": self.id}
        if hello:
            body["hello"] = True
        if leaving:
            body["leaving"] = True
        try:
            await self._nc.publish(self._subject, orjson.dumps(body))
        except nats.errors.Error as exc:
            log.debug("membership: cannot publish a heartbeat: %s", exc)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
            member = body["id"]
            if not isinstance(member, str) or not 0 < len(member) <= _MAX_MEMBER_ID:
                raise ValueError(f"bad member id {member!r}")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed worker heartbeat on %s: %s", msg.subject, exc)
            return
        if member == self.id:
            return
        if body.get("leaving"):
            if self._seen.pop(member, None) is not None:
                log.info("worker %s left", member)
                self._on_change()
            return
        known = member in self._seen
        self._seen[member] = time.monotonic()
        if body.get("hello"):
            await self._beat()  # so the newcomer knows about us without waiting
        if not known:
            log.info("worker %s joined", member)
            self._on_change()


class Partitions:
    """Pulls the workflow partitions of one queue that this process is assigned.

    For each owned partition it runs two pull drivers: the pinned history consumer
    (``wf_<queue>_<p>``) and the partition's deferred starts (``adm_<queue>_<p>``), both feeding
    ``processor``. When the assignment changes it starts and stops them, releasing the pin of
    each partition it gives up.
    """

    def __init__(
        self, store: WorkerStore, processor: WorkflowProcessor, queue: str, concurrency: int
    ) -> None:
        settings = processor.settings
        self.store = store
        self.processor = processor
        self.queue = queue
        self.concurrency = concurrency
        self.pin_timeout = settings.workflow_ack_wait / 2
        interval = min(1.0, settings.workflow_ack_wait / 10)
        self.membership = Membership(
            store.nc, store.layout.workers_subject(queue), interval, self._changed
        )
        self._held: dict[int, tuple[PullConsumer, PullConsumer]] = {}
        self._wake = asyncio.Event()
        self._reconciler: asyncio.Task[None] | None = None

    @property
    def held(self) -> list[int]:
        """The partitions this process pulls now."""
        return sorted(self._held)

    async def ensure_consumers(self) -> None:
        """Create every partition's consumers (idempotent; any worker may create them)."""
        store, lay, queue = self.store, self.store.layout, self.queue
        ack_wait = self.processor.settings.workflow_ack_wait
        creating = []
        for p in range(PARTITIONS):
            workflows, admission = lay.workflow_consumer(queue, p), lay.admit_consumer(queue, p)
            creating.append(
                store.streams.ensure_consumer(
                    lay.history_stream,
                    workflows,
                    lay.history_filter(queue, p),
                    ack_wait,
                    pinned_for=self.pin_timeout,
                )
            )
            creating.append(
                store.streams.ensure_consumer(
                    lay.tasks_stream, admission, lay.admit_subject(queue, p), ack_wait
                )
            )
        await asyncio.gather(*creating)

    async def start(self) -> None:
        await self.membership.start()
        await self._apply(self._wanted())
        self._reconciler = asyncio.create_task(self._reconcile())

    async def count_deferred(self) -> None:
        """Read how many deferred starts wait in each partition served here.

        This worker counts the starts it defers itself; this finds those another worker left
        (before a failover, or before a restart). The worker calls it periodically.
        """
        lay = self.store.layout
        for p in self.held:
            try:
                count = await self.store.streams.pending(
                    lay.tasks_stream, lay.admit_consumer(self.queue, p)
                )
            except DFError as exc:
                log.debug("queue %s: cannot count deferred starts of %d: %s", self.queue, p, exc)
                continue
            self.processor.admissions_pending(p, count)

    async def stop(self, timeout: float) -> None:
        """Leave the membership, finish in-flight work and release every pin."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            await asyncio.gather(self._reconciler, return_exceptions=True)
        await self.membership.stop()
        await asyncio.gather(*(self._release(p, timeout) for p in list(self._held)))

    def on_reconnected(self) -> None:
        for pullers in self._held.values():
            for puller in pullers:
                puller.on_reconnected()

    def _changed(self) -> None:
        self._wake.set()

    def _wanted(self) -> set[int]:
        me = self.membership.id
        return {p for p, owner in assign(self.membership.members()).items() if owner == me}

    async def _reconcile(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._apply(self._wanted())
            except DFError as exc:  # retried at the next change or heartbeat
                log.warning("queue %s: cannot change partitions: %s", self.queue, exc)
                self._wake.set()
                await asyncio.sleep(1.0)

    async def _apply(self, wanted: set[int]) -> None:
        gained = sorted(wanted - self._held.keys())
        lost = sorted(self._held.keys() - wanted)
        if not gained and not lost:
            return
        for p in gained:
            self._held[p] = pullers = self._pullers(p, len(wanted))
            for puller in pullers:
                await puller.start()
        if gained:
            await self.count_deferred()
        await asyncio.gather(*(self._release(p, self.pin_timeout) for p in lost))
        log.info(
            "queue %s: serving workflow partitions %s of %d (%d worker(s))",
            self.queue,
            _ranges(self.held),
            PARTITIONS,
            len(self.membership.members()),
        )

    def _pullers(self, p: int, owned: int) -> tuple[PullConsumer, PullConsumer]:
        """The drivers of partition ``p``, sized for a process serving ``owned`` of them."""
        store, lay, processor = self.store, self.store.layout, self.processor
        expires = self.pin_timeout / 2  # only pulls carrying the pin id keep it
        history = PullConsumer(
            store.nc,
            lay.history_stream,
            lay.workflow_consumer(self.queue, p),
            processor.handle,
            max_inflight=max(8, math.ceil(self.concurrency / owned)),
            expires=expires,
            idle_heartbeat=expires / 2.5,
            group=PIN_GROUP,
        )
        reserve = max(1, math.ceil(processor.admission_reserve / owned))
        admission = PullConsumer(
            store.nc,
            lay.tasks_stream,
            lay.admit_consumer(self.queue, p),
            processor.admit,
            max_inflight=reserve,
            expires=_PROBE_EXPIRES,
            idle_heartbeat=_PROBE_EXPIRES / 2.5,
            room=lambda: processor.room_for(p),
            min_batch=max(1, reserve // 4),
            on_empty=lambda: processor.admissions_pending(p, 0),
        )
        processor.attach_admission(p, admission)
        return history, admission

    async def _release(self, p: int, timeout: float) -> None:
        history, admission = self._held.pop(p)
        await asyncio.gather(history.stop(timeout), admission.stop(timeout))
        self.processor.detach_admission(p)
        if history.pinned:
            lay = self.store.layout
            try:
                consumer = lay.workflow_consumer(self.queue, p)
                await self.store.streams.unpin(lay.history_stream, consumer)
            except DFError as exc:  # the pin then lapses after pin_timeout
                log.warning("queue %s: cannot release partition %d: %s", self.queue, p, exc)
        self.processor.release_partition(p)


def _ranges(partitions: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    if not partitions:
        return "none"
    spans: list[list[int]] = []
    for p in partitions:
        if spans and p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
