"""Waiting for many workflow outcomes over one subscription.

A client that awaits thousands of handles (a view fanning out work, a script firing a burst)
must not pay a subscription, a flush and a read per handle. :class:`OutcomeWatcher` keeps one
subscription on the namespace's status subjects while anyone waits, routes each outcome to the
handles waiting for that workflow, and reads the outcomes that may already be stored in
batches of up to 200 subjects per request. Every few seconds, and after a reconnect, it reads
the outcomes of everything still waited for: a status published while the connection was down
was stored but never delivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._errors import CodecUnavailableError, DFError
from dfcore.core._logfields import log_fields

if TYPE_CHECKING:
    from nats.aio.subscription import Subscription

    from dfcore.jetstream._store import Store

log = logging.getLogger("dfcore.client")

RECHECK_SECONDS = 5.0
IDLE_SECONDS = 30.0
"""The subscription is dropped after this long with nobody waiting."""


class OutcomeWatcher:
    """Delivers the record that ended each awaited workflow (one per client connection)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiters: dict[str, list[asyncio.Future[h.Record]]] = {}
        self._sub: Subscription | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._unchecked: set[str] = set()
        self._checker: asyncio.Task[None] | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._verifying: set[asyncio.Task[None]] = set()

    async def wait(self, status_subject: str) -> h.Record:
        """The record that ended the workflow whose status subject is ``status_subject``."""
        await self._subscribe()
        future: asyncio.Future[h.Record] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(status_subject, []).append(future)
        self._check(status_subject)
        try:
            return await future
        finally:
            self._forget(status_subject, future)

    def recheck_all(self) -> None:
        """Read every awaited outcome again (call after a reconnect)."""
        for subject in self._waiters:
            self._check(subject)

    async def close(self) -> None:
        """Drop the subscription; whoever still waits gets a ``DFError`` (call it again)."""
        for handle in (self._recheck, self._idle):
            if handle is not None:
                handle.cancel()
        if self._checker is not None:
            self._checker.cancel()
        for task in list(self._verifying):
            task.cancel()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(
                        DFError("the client was closed while waiting; call result() again")
                    )
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await _unsubscribe(sub)

    # -- subscription -----------------------------------------------------------------------

    async def _subscribe(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._sub is not None:
            return
        if self._subscribing is None or self._subscribing.done():
            # Its own task: a caller cancelled meanwhile (a timeout) cancels nobody else's wait.
            self._subscribing = asyncio.get_running_loop().create_task(self._open())
        await asyncio.shield(self._subscribing)

    async def _open(self) -> None:
        nc = self._store.nc
        sub = await nc.subscribe(self._store.layout.status_all, cb=self._on_msg)
        try:
            await asyncio.sleep(0)  # let the SUB reach the write buffer before the flush
            await nc.flush()
        except BaseException:
            await sub.unsubscribe()
            raise
        self._sub = sub
        self._schedule_recheck()

    async def _on_msg(self, msg: Msg) -> None:
        if msg.subject not in self._waiters:
            return
        try:
            record = h.validate_record(0, self._store.decode(msg.data, "workflow outcome"))
        except (DFError, ValueError) as exc:
            fields = self._fields(msg.subject)
            log.warning("ignoring an unreadable outcome on %s: %s", msg.subject, exc, extra=fields)
            return
        # Checked against the history in its own task: the subscription's callbacks run one
        # at a time, and a burst of outcomes must not wait for each other's reads.
        task = asyncio.get_running_loop().create_task(self._verify(msg.subject, record))
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)

    async def _verify(self, subject: str, candidate: h.Record) -> None:
        """Deliver the history's decision that ``candidate`` points to, if it ended the run."""
        try:
            decision = await self._store.verified_outcome(subject, candidate)
        except CodecUnavailableError as exc:
            self._fail(subject, exc)  # this process cannot read the outcome: say so, not hang
            return
        except DFError as exc:
            log.warning(
                "could not check an outcome on %s (will read it again): %s",
                subject,
                exc,
                extra=self._fields(subject),
            )
            return  # the periodic recheck reads it again
        if decision is None:
            log.warning(
                "ignoring an outcome on %s that its history does not hold (forged, or read "
                "from a replica that lags behind; it is read again later)",
                subject,
                extra=self._fields(subject),
            )
            return
        self._deliver(subject, decision)

    def _fields(self, status_subject: str) -> dict[str, Any]:
        """``extra=`` of a line about the workflow of a status subject (its id: a client
        waiting for an outcome knows neither the run nor the type)."""
        return log_fields(self._store.layout.parse_status_subject(status_subject))

    def _deliver(self, subject: str, record: h.Record) -> None:
        for future in self._waiters.get(subject, ()):
            if not future.done():
                future.set_result(record)

    def _fail(self, subject: str, error: DFError) -> None:
        for future in self._waiters.get(subject, ()):
            if not future.done():
                future.set_exception(error)

    def _forget(self, subject: str, future: asyncio.Future[h.Record]) -> None:
        waiters = self._waiters.get(subject)
        if waiters is not None:
            waiters.remove(future)
            if not waiters:
                del self._waiters[subject]
        if not self._waiters and self._sub is not None and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._on_idle)

    def _on_idle(self) -> None:
        """Nobody waited for a while: drop the subscription (unless someone came meanwhile)."""
        self._idle = None
        if self._waiters or self._sub is None:
            return
        if self._recheck is not None:
            self._recheck.cancel()
        sub, self._sub = self._sub, None  # at once: a waiter arriving next subscribes anew
        asyncio.get_running_loop().create_task(_unsubscribe(sub))

    # -- reading stored outcomes ------------------------------------------------------------

    def _check(self, subject: str) -> None:
        """Read ``subject``'s stored outcome soon, batched with the others asked for now."""
        self._unchecked.add(subject)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._read_unchecked())

    async def _read_unchecked(self) -> None:
        await asyncio.sleep(0)  # let the other callers of this moment add their subjects
        while self._unchecked:
            batch = [s for s in self._unchecked if s in self._waiters]
            self._unchecked.clear()
            try:
                found = await self._store.last_many(batch)
            except CodecUnavailableError:
                found = await self._read_one_by_one(batch)  # find whose outcome is unreadable
            except DFError as exc:
                log.warning("could not read workflow outcomes (will retry): %s", exc)
                continue
            await asyncio.gather(*(self._verify(subject, record) for subject, record in found))

    async def _read_one_by_one(self, subjects: list[str]) -> list[tuple[str, h.Record]]:
        """Each subject's stored outcome; the waiters of one this process cannot decode fail."""
        found = []
        for subject in subjects:
            try:
                last = await self._store.last(subject)
            except CodecUnavailableError as exc:
                self._fail(subject, exc)
                continue
            except DFError as exc:
                log.warning(
                    "could not read the outcome on %s (will retry): %s",
                    subject,
                    exc,
                    extra=self._fields(subject),
                )
                continue
            if last is not None:
                found.append((subject, last[1]))
        return found

    def _schedule_recheck(self) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if self._sub is None:
                return
            self.recheck_all()
            self._schedule_recheck()

        self._recheck = loop.call_later(RECHECK_SECONDS, fire)


async def _unsubscribe(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:
        log.debug("could not unsubscribe from outcomes: %s", exc)
