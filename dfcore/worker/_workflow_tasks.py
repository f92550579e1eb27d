"""Workflow tasks: replay, decide, append, dispatch.

Every record appended to a history on queue Q is delivered (through the durable consumer
``wf_Q_<p>`` of its partition, see ``_partitions``) to the worker serving that partition. The
worker brings its cached :class:`WorkflowRun` up to date by loading the records after the last
one it applied (an exact read, no timeouts), applies them, and appends the commands the code
produced as one ``Decided`` record, with the expected-last-subject-sequence check (a concurrent
writer makes it reload and re-decide). Only then does it publish the work the decision implies
(activity tasks, timer schedules) and ack the message. A decision record is itself delivered
later; if its work was not published yet (the worker died in between), whoever receives it
publishes it, with the same deterministic message ids.

A message that cannot be used is dead-lettered (docs/architecture.md, "Bad input"); workflow
code that raises a bug is retried with backoff and noted as ``WorkflowTaskFailed``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._engine import WorkflowRun
from dfcore.core._errors import (
    CodecUnavailableError,
    DFError,
    NondeterminismError,
    PayloadError,
    PayloadTooLargeError,
    UnregisteredWorkflowError,
    WorkflowCodeError,
    WorkflowNotFoundError,
)
from dfcore.core._facts import Decision, run_of
from dfcore.core._logfields import log_fields
from dfcore.core._observe import Observers, trace_headers
from dfcore.core._registry import Registry
from dfcore.core._replay import new_run
from dfcore.jetstream._naming import queue_of, workflow_token
from dfcore.jetstream._pull import PullConsumer
from dfcore.jetstream._stamps import removal_marker
from dfcore.jetstream._store import AppendConflict, delivery_stamp, verified_prev
from dfcore.worker._cache import CachedWorkflow
from dfcore.worker._delivery import KeepAlive, retry_delay
from dfcore.worker._dispatch import dispatch, report_end
from dfcore.worker._indexing import index_change, index_end
from dfcore.worker._observing import TaskWork, tell_decided
from dfcore.worker._storage import WorkerStore
from dfcore.worker._workflow_records import follows, log_progress, note_task_failure, split_decision

log = logging.getLogger("dfcore.worker")
_NO_LIMIT = 1 << 30
_POINTER_TRIES = 5  # reads of a deferred start that is not there before it is dead-lettered


class _StaleRead(DFError):
    """A read did not reach the delivered record yet (a lagging replica); try again shortly."""


class WorkflowProcessor:
    """Handles history messages of one task queue: replays, decides, appends, dispatches."""

    def __init__(
        self, registry: Registry, store: WorkerStore, observers: Observers | None = None
    ) -> None:
        self.registry = registry
        self.observers = observers or Observers()
        self.settings = settings = store.settings
        self.store = store
        self.cache: OrderedDict[str, CachedWorkflow] = OrderedDict()
        self.capacity = settings.workflow_cache_size
        self.idle_after = settings.workflow_ack_wait
        self.live = 0  # cached entries holding a run: the running workflows taken on
        self._admitting = 0  # starts delivered on the history, being taken on
        self._admissions: dict[int, PullConsumer] = {}  # by partition: the ones served here
        # Deferred starts waiting in each served partition's admission queue, as far as this
        # worker knows: it defers them itself, each one delivered says how many remain, and
        # the worker reads the consumers' counts now and then (another worker may have left
        # some). Pullers never ask for more, so no room is held for starts that are not there.
        self._pending: dict[int, int] = {}
        # Decisions this worker appended and finished dispatching, by stream sequence (-> their
        # subject), until they are delivered back: then they owe nothing, and are acked unread
        # (or, when delivered before their dispatch finished, once it has). Bounded: one that
        # falls out is dispatched again, idempotently.
        self._sent: OrderedDict[int, str] = OrderedDict()
        self._sent_limit = 4 * self.capacity + 1024

    @property
    def admission_reserve(self) -> int:
        """Places in the cache the admission pullers may ask the server to fill, in all.

        Room they ask for is held for the deferred starts it will bring, so it is kept small
        beside the cache: otherwise new starts would be deferred while nothing was waiting.
        """
        return max(1, min(self.settings.workflow_concurrency, self.capacity // 8))

    def attach_admission(self, partition: int, puller: PullConsumer) -> None:
        """Pull deferred starts of ``partition`` with ``puller`` (``adm_<queue>_<p>``)."""
        self._admissions[partition] = puller
        self._pending.setdefault(partition, 0)

    def detach_admission(self, partition: int) -> None:
        self._admissions.pop(partition, None)
        self._pending.pop(partition, None)

    def admissions_pending(self, partition: int, count: int) -> None:
        """``count`` deferred starts wait in ``partition``'s admission queue (read or seen)."""
        if partition not in self._admissions:
            return
        before = self._pending.get(partition, 0)
        self._pending[partition] = max(count, 0)
        if count > before:
            self._admissions[partition].poke()
        elif count < before:
            self._poke_admissions()  # room asked for it may now go to another partition

    def release_partition(self, partition: int) -> None:
        """Forget the workflows of a partition another worker serves from now on."""
        lay = self.store.layout
        for workflow_id, entry in list(self.cache.items()):
            if not entry.users and lay.partition_of_subject(entry.subject) == partition:
                self._drop(entry)
                del self.cache[workflow_id]

    # -- admission (docs/architecture.md, "Bursts") -----------------------------------------

    def room(self) -> int:
        """How many more workflows this worker can take on and keep cached."""
        if not self.capacity:
            return _NO_LIMIT  # no cache at all, so nothing to protect
        taking = self._admitting + sum(a.inflight for a in self._admissions.values())
        return max(self.capacity - self.live - taking, 0)

    def room_for(self, partition: int) -> int:
        """How many deferred starts of ``partition`` to ask for: what waits there, as far as
        room goes once the other partitions' requests are met."""
        pending = self._pending.get(partition, 0)
        if pending <= 0:
            return 0
        asked = sum(a.outstanding for p, a in self._admissions.items() if p != partition)
        return min(pending, self.room() - asked)

    def _requested(self) -> int:
        """Room the admission pullers asked for: deferred starts on their way."""
        return sum(a.outstanding for a in self._admissions.values())

    def _poke_admissions(self) -> None:
        """Let the pullers of partitions with deferred starts waiting ask for them."""
        for partition, puller in self._admissions.items():
            if self._pending.get(partition, 0) > 0:
                puller.poke()

    def _no_room_for(self, msg: Msg) -> bool:
        """Whether ``msg`` starts a workflow this worker has no room to cache.

        Read from the ``Df-Event`` header, before decoding, so a deferred start costs little;
        a forged header only delays the message it is on. A run idle for ``idle_after``
        seconds is evicted to make room (it replays if it wakes up). Room that the admission
        puller has asked the server for is kept for the deferred starts it will bring: they
        came first.
        """
        headers = msg.headers
        if headers is None or headers.get(h.HDR_EVENT) != h.WORKFLOW_STARTED:
            return False
        requested = self._requested()
        if self.room() - requested > 0:
            return False  # room, beyond what deferred starts already requested hold
        try:
            _, workflow_id = self.store.layout.parse_history_subject(msg.subject)
        except ValueError:
            return False  # dead-lettered by the normal path
        entry = self.cache.get(workflow_id)
        if entry is not None and (entry.run is not None or entry.closed_seq):
            return False  # known here: a redelivery, not a new workflow
        return not self._evict_idle()

    def _evict_idle(self) -> bool:
        """Drop the least recently used run idle for ``idle_after`` seconds; False if none.

        Marks of ended workflows met on the way that are as old are deleted too: nothing is
        likely to be redelivered for them any more, and they would hide the runs behind them.
        """
        now = time.monotonic()
        oldest = next(iter(self.cache.values()), None)
        if oldest is None or now - oldest.touched < self.idle_after:
            return False  # the common case under a burst: nothing idle, so copy nothing
        for workflow_id, entry in list(self.cache.items()):
            if now - entry.touched < self.idle_after:
                return False  # LRU order: every later entry was touched more recently
            if entry.users:
                continue
            if entry.run is None:
                del self.cache[workflow_id]
                continue
            self._drop(entry)
            return True
        return False

    def sweep_idle(self) -> None:
        """Evict every run idle for ``idle_after`` seconds, then let deferred starts in.

        The worker calls it periodically. Without it a worker could keep runs that will not
        wake up and never have room again.
        """
        evicted = False
        while self._evict_idle():
            evicted = True
        if evicted:
            self._poke_admissions()

    async def _defer(self, msg: Msg) -> None:
        """Leave a start on its partition's admission queue until there is room, then ack it."""
        try:
            await self.store.defer_start(msg.subject, msg.metadata.sequence.stream)
        except DFError as exc:
            log.warning("cannot defer a start (%s); handing it back", exc)
            await msg.nak(delay=1.0)
            return
        partition = self.store.layout.partition_of_subject(msg.subject)
        self.admissions_pending(partition, self._pending.get(partition, 0) + 1)
        await msg.ack()

    async def admit(self, msg: Msg) -> None:
        """Take on a start deferred by a worker whose cache was full (``adm_<queue>_<p>``)."""
        partition_token = msg.subject.rsplit(".", 1)[-1]
        if partition_token.isdigit():  # the server says how many are left behind this one
            self.admissions_pending(int(partition_token), msg.metadata.num_pending)
        try:
            pointer = orjson.loads(msg.data)
            subject, seq = str(pointer["h"]), int(pointer["seq"])
            lay = self.store.layout
            queue, workflow_id = lay.parse_history_subject(subject)
            partition = lay.partition_of_subject(subject)
            if seq < 1 or msg.subject != lay.admit_subject(queue, partition):
                raise ValueError(f"it names sequence {seq} of {subject} on {msg.subject}")
        except (ValueError, KeyError, TypeError) as exc:
            await self._reject(msg, f"not a deferred start: {exc}", source="admit")
            return
        attempt = msg.metadata.num_delivered
        try:
            start = await self.store.start_at(subject, seq)
        except DFError as exc:
            fields = log_fields(workflow_id)
            log.warning("cannot read deferred start %s (%s); will retry", seq, exc, extra=fields)
            await msg.nak(delay=retry_delay(attempt))
            return
        if start is not None:
            await self._serve(workflow_id, subject, start, msg, opens_history=True)
        elif attempt < _POINTER_TRIES:  # a replica may lag behind the start's append
            await msg.nak(delay=retry_delay(attempt))
        else:
            reason = f"message {seq} is not the start of {subject} (purged, or never was)"
            await self._reject(msg, f"not a deferred start: {reason}", source="admit")

    # -- history messages -------------------------------------------------------------------

    async def handle(self, msg: Msg) -> None:
        if self._sent and self._sent.pop(msg.metadata.sequence.stream, None) == msg.subject:
            await msg.ack()  # our own decision, delivered back: its work is published
            return
        if removal_marker(msg.headers or {}, self.store.layout):
            await msg.ack()  # the server removed an ended workflow's records (retention)
            return
        if self._no_room_for(msg):
            await self._defer(msg)
            return
        seq = msg.metadata.sequence.stream
        try:
            _, workflow_id = self.store.layout.parse_history_subject(msg.subject)
            body = self.store.decode(msg.data, f"history message {seq}")
            record = h.validate_record(seq, body, delivery_stamp(msg))
        except CodecUnavailableError as exc:  # this process lacks the key; the message is fine
            log.error("%s; will retry", exc, extra=log_fields(workflow_id))
            await msg.nak(delay=retry_delay(msg.metadata.num_delivered))
            return
        except (ValueError, PayloadError) as exc:  # MalformedRecordError is a ValueError
            await self._reject(msg, str(exc))
            return
        if record.type == h.WORKFLOW_TASK_FAILED:
            await msg.ack()  # a note for people; the failed task retries on its own message
            return
        if record.type != h.WORKFLOW_STARTED:
            await self._serve(workflow_id, msg.subject, record, msg)
            return
        self._admitting += 1  # hold its place while it waits for the lock and the read
        try:
            first = self.store.is_first_record(msg.headers, msg.subject)
            record = dataclasses.replace(record, opens=first, trace=trace_headers(msg.headers))
            await self._serve(workflow_id, msg.subject, record, msg, opens_history=first)
        finally:
            self._admitting -= 1

    async def _serve(
        self,
        workflow_id: str,
        subject: str,
        record: h.Record,
        msg: Msg,
        *,
        opens_history: bool = False,
    ) -> None:
        """Bring the workflow past ``record`` under its lock, then ack ``msg``.

        ``opens_history``: ``record`` is provably its history's first record, so a new run
        needs no read: if anything followed it, the decision's append conflicts and the rest
        is read then.
        """
        entry = self._entry(workflow_id, subject)
        entry.users += 1
        keep_alive = KeepAlive(msg, self.settings.workflow_ack_wait / 3)
        work = TaskWork()
        try:
            async with entry.lock:
                if not await self._handle_locked(entry, record, msg, work, opens_history):
                    return
        finally:
            keep_alive.cancel()
            entry.users -= 1
        self._trim()
        await msg.ack()

    async def _reject(self, msg: Msg, reason: str, source: str = "") -> None:
        """Dead-letter a message the engine cannot use, then ack it."""
        admitted = msg.subject.startswith(self.store.layout.admit_all[:-1])
        await self.store.dlq.keep_message(
            source or ("admit" if admitted else "history"), msg, reason
        )
        await msg.ack()

    async def _handle_locked(
        self, entry: CachedWorkflow, record: h.Record, msg: Msg, work: TaskWork, opens_history: bool
    ) -> bool:
        """Process one record; False when the message was handed back or dead-lettered."""
        prev = verified_prev(msg.headers, record)
        try:
            await self._process(entry, record, opens_history, prev, work)
        except _StaleRead:
            await msg.nak(delay=0.2)
            return False
        except WorkflowNotFoundError as exc:
            self._drop(entry)
            await self._reject(msg, str(exc))
            return False
        except (NondeterminismError, WorkflowCodeError, UnregisteredWorkflowError) as exc:
            fields, attempt = entry.log_fields(), msg.metadata.num_delivered
            self._drop(entry)
            log.error("%s", exc, extra=fields)
            await note_task_failure(self.store, entry.subject, exc, attempt, fields)
            await msg.nak(delay=retry_delay(attempt))
            return False
        except Exception as exc:
            fields = entry.log_fields()
            self._drop(entry)
            log.exception(
                "workflow %s: task failed (%s); will retry", entry.workflow_id, exc, extra=fields
            )
            await msg.nak(delay=retry_delay(msg.metadata.num_delivered))
            return False
        return True

    def close(self) -> None:
        """Release every cached workflow (the worker is stopping)."""
        for entry in self.cache.values():
            self._drop(entry)
        self.cache.clear()

    def _entry(self, workflow_id: str, subject: str) -> CachedWorkflow:
        entry = self.cache.get(workflow_id)
        if entry is None:
            entry = self.cache[workflow_id] = CachedWorkflow(workflow_id, subject)
        else:
            self.cache.move_to_end(workflow_id)
        entry.touched = time.monotonic()
        return entry

    def _drop(self, entry: CachedWorkflow) -> None:
        if entry.run is not None:
            entry.run.evict()
            self.live -= 1
            self._poke_admissions()
        entry.run = None

    def _trim(self) -> None:
        """Evict least recently used entries that no handler is using.

        Runs are kept up to ``capacity``; entries without a run (the marks of workflows that
        ended here, which absorb late redeliveries) up to twice that in all.
        """
        runs_over = self.live - self.capacity
        entries_over = len(self.cache) - 2 * self.capacity
        if runs_over <= 0 and entries_over <= 0:
            return
        window = 2 * max(runs_over, entries_over) + 64
        for workflow_id in list(itertools.islice(self.cache, window)):
            if self.live <= self.capacity and len(self.cache) <= 2 * self.capacity:
                break
            entry = self.cache[workflow_id]
            if entry.users or (entry.run is None and len(self.cache) <= 2 * self.capacity):
                continue
            self._drop(entry)
            del self.cache[workflow_id]

    def _new_run(self, workflow_id: str) -> WorkflowRun:
        return new_run(self.registry, workflow_id, self.settings, self._check_payload)

    def _check_payload(self, value: Any, what: str) -> None:
        """Raise at the workflow's call site if ``value`` cannot be sent."""
        self.store.encode({"v": value}, what)

    async def _process(
        self,
        entry: CachedWorkflow,
        record: h.Record,
        opens_history: bool,
        prev: int | None,
        work: TaskWork,
    ) -> None:
        """Bring the run past ``record`` and decide. ``prev``: the record's server-checked
        ``prev`` (None when unchecked): when it is the run's last record, nothing is read."""
        run = entry.run
        seq = record.seq
        if seq <= entry.closed_seq or (run is not None and run.last_seq >= seq):
            # Already applied. A decision may still owe its work (its writer died before
            # publishing it): publish it now, idempotently.
            if record.type == h.DECIDED and self._sent.pop(seq, None) != entry.subject:
                await self._dispatch(entry, run, record, delivered=True)
            return
        if run is None:
            run = entry.run = self._new_run(entry.workflow_id)
            self.live += 1
            work.cache = "miss"
        known = [record] if opens_history and run.last_seq == 0 else None
        if known is None and follows(record, prev, run.last_seq):
            known = [record]
        elif known is None and run.last_seq == 0:
            work.cache = "replay"  # its whole history is read
        if self.observers:
            self.observers.cache(queue_of(entry.subject), work.cache)
        await self._catch_up_and_decide(entry, run, seq, known, work)
        if run.closed and not run.pending_commands():
            entry.closed_seq = run.last_seq
            self._drop(entry)

    async def _catch_up_and_decide(
        self,
        entry: CachedWorkflow,
        run: WorkflowRun,
        delivered: int,
        known: list[h.Record] | None,
        work: TaskWork,
    ) -> None:
        conflicted = False
        while True:
            if known is not None:
                records, seen = known, delivered
            else:
                records, seen = await self.store.read_recent(entry.subject, run.last_seq)
                if conflicted and seen == run.last_seq:
                    # Our append conflicted, yet the read shows nothing new: it came from a
                    # replica that lags behind. Try again shortly rather than spin.
                    raise _StaleRead(f"read of {entry.subject} lags behind an append")
            known = None
            run = self._next_run_in(entry, run, records)
            run.apply(records)
            run.skip_to(seen)
            if run.last_seq < delivered:
                raise _StaleRead(f"read of {entry.subject} ended before {delivered}")
            if not run.started:
                raise WorkflowNotFoundError(
                    entry.workflow_id,
                    self.store.settings.namespace,
                    detail=f"no workflow {entry.workflow_id!r} exists: its history has no "
                    "readable WorkflowStarted record, so nothing can use this message",
                )
            for record in records:
                if record.seq == delivered and record.type == h.DECIDED:
                    await self._dispatch(entry, run, record, delivered=True)
            if await self._decide(entry, run, work):
                return
            conflicted = True
            work.conflicts += 1

    def _next_run_in(
        self, entry: CachedWorkflow, run: WorkflowRun, records: list[h.Record]
    ) -> WorkflowRun:
        """A fresh run when ``records`` hold the start of the workflow's next run (it continued
        as new); the records from that start on are then applied to it. Only a start that
        provably opens the history counts: any other is a stray, and ignored."""
        for i, record in enumerate(records):
            later = record.type == h.WORKFLOW_STARTED and (i or run.started)
            if later and record.opens and run_of(record.body) > run.info.run:
                run.evict()
                del records[:i]
                entry.run = self._new_run(entry.workflow_id)
                return entry.run
        return run

    async def _decide(self, entry: CachedWorkflow, run: WorkflowRun, work: TaskWork) -> bool:
        """Append the pending commands; False if someone appended first.

        A decision too big for one message is appended as several records, all but the last
        marked ``more`` (the usual decision is encoded once and sent as it is).
        """
        cmds = run.pending_commands()
        if not cmds:
            return True
        body = Decision(cmds, run.last_seq, run=run.info.run).to_wire()
        try:
            data: bytes | None = self.store.encode(body, "a decision")
        except PayloadTooLargeError:
            parts = split_decision(cmds, self.store)
        else:
            return await self._appenddecision_body(entry, run, body, data, work)
        for i, part in enumerate(parts):
            more = i < len(parts) - 1
            body = Decision(part, run.last_seq, more=more, run=run.info.run).to_wire()
            if not await self._appenddecision_body(entry, run, body, None, work):
                return False
        return True

    async def _appenddecision_body(
        self,
        entry: CachedWorkflow,
        run: WorkflowRun,
        body: dict[str, Any],
        data: bytes | None,
        work: TaskWork,
    ) -> bool:
        status = h.terminal_status(body["cmds"])
        try:
            seq = await self.store.append(
                entry.subject,
                body,
                msg_id=f"{workflow_token(run.info.workflow_id)}:d:{run.last_seq}",
                expected_seq=run.last_seq,
                status=status,
                data=data,
            )
        except AppendConflict:
            if self.observers:
                self.observers.append_conflict(queue_of(entry.subject))
            return False  # read what was appended and decide again
        first, was_failing = not run.decided, run.noted_failure
        record = h.Record(seq, body)
        trace = run.info.trace
        if self.observers and not body.get("more"):  # a split decision is told once, at its end
            trace = tell_decided(self.observers, run, work, seq, body, status) or trace
        run.apply([record])
        await self._dispatch(entry, run, record, trace=trace)
        if was_failing and status is None:  # its code got past the failure
            await index_change(self.store, entry.subject, status="running", failure=None)
        if first or status is not None:
            log_progress(run.info, first, status, body["cmds"])
        return True

    async def _dispatch(
        self,
        entry: CachedWorkflow,
        run: WorkflowRun | None,
        record: h.Record,
        *,
        delivered: bool = False,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        """Publish the work a decision implies; idempotent (deterministic message ids).

        ``delivered``: the decision is the message being handled, so it will not be delivered
        again; otherwise (just appended) it will be, and is then acked unread. ``trace``: the
        trace headers its activity tasks and children carry (by default its start's).
        """
        cmds = record.commands
        if trace is None:
            trace = run.info.trace if run is not None else {}
        await dispatch(self.store, entry.workflow_id, entry.subject, run, record, trace)
        if h.terminal_status(cmds):
            info = run.info if run is not None else None  # None: its start says who waits
            await asyncio.gather(
                self.store.mark_ended(entry.subject, record.body, record.seq),
                index_end(self.store, entry.subject, record, info),
            )
            if info is None or info.parent is not None or info.schedule is not None:
                await report_end(self.store, entry.subject, record, info)
            if run is None or run.has_pending_timers():
                await self.store.purge_timers(entry.subject)
        if not delivered:
            self._sent[record.seq] = entry.subject
            if len(self._sent) > self._sent_limit:
                self._sent.popitem(last=False)
