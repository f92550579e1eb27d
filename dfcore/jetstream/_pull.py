"""A fast driver for a durable JetStream pull consumer.

nats-py's ``PullSubscription.fetch()`` makes a request, waits for the batch (or its expiry) and
only then can ask for more, so a worker idles between batches and pays a fresh inbox future per
call: measured 2-3.5x slower than sending pull requests yourself. :class:`PullConsumer` keeps
pull requests open continuously instead, as the Go and Java clients' ``Consume()`` do:

* messages arrive on one private inbox subscription and each runs its handler as a task;
* a credit counter caps the handlers in flight at ``max_inflight``; a new request is published
  only when at least a quarter of that credit is free, so requests stay few under load;
* the server's status messages give unfulfilled credit back (``408``/``409``), idle heartbeats
  prove the requests are still alive, and a watchdog re-requests when they stop arriving (a
  server restart forgets pull requests without telling anyone);
* on a cluster, pull requests live only in the consumer's leader: when a new leader is elected
  (the old one's node died), its advisory makes the driver request again at once;
* with ``group``, the consumer is a pinned-client priority group: the server delivers to one
  client at a time, whose requests carry the pin id it was given (``Nats-Pin-Id``). A request
  without the id waits as a standby; a ``423`` says the pin moved on, and the driver becomes a
  standby again.

The consumer itself (durable, explicit ack) is created by the caller; this module only pulls.
Handlers receive ordinary :class:`nats.aio.msg.Msg` objects and ack them themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from dfcore.core._errors import ConfigurationError, DFConnectionError

__all__ = ["PullConsumer"]

logger = logging.getLogger("dfcore.pull")

Handler = Callable[[Msg], Awaitable[None]]

_NS_PER_S: Final = 1_000_000_000
# Header of a 408/409 status with the number of messages its request will no longer deliver.
_PENDING_MESSAGES: Final = "Nats-Pending-Messages"
# 409s after which asking again at once cannot help: the consumer is gone, or the server already
# holds as many requests as the consumer's max_waiting allows (other workers share it).
_BACK_OFF_CONFLICTS: Final = frozenset({"Consumer Deleted", "Exceeded MaxWaiting"})
# Missed heartbeats tolerated before the open requests are presumed lost.
_MISSED_HEARTBEATS: Final = 3
_BACKOFF_FIRST: Final = 1.0
_BACKOFF_MAX: Final = 10.0
_LEADER_ELECTED: Final = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED"
_PIN_ID: Final = "Nats-Pin-Id"
_PIN_LOST: Final = "423"  # "Nats-Pin-Id mismatch" (a new request), "Nats-Wrong-Pin-Id" (open)


def _status_of(msg: Msg) -> str | None:
    """The code of a status message (``"100"``, ``"408"``...), None for any other message.

    Reads the ``Status`` header the way nats-py's ``JetStreamContext.is_status_msg`` does.
    """
    return msg.headers.get(api.Header.STATUS) if msg.headers else None


class PullConsumer:
    """Runs ``handler`` for every message of an existing durable pull consumer.

    Args:
        nc: a connected client.
        stream: the stream name.
        consumer: the durable consumer's name; the caller creates it.
        handler: awaited once per delivered message, in its own task; it acks, naks or marks
            progress itself. An exception is logged and leaves the message unacked.
        max_inflight: most handlers running at once (and most messages requested but not yet
            delivered, so also the prefetch).
        expires: lifetime of one pull request, in seconds.
        idle_heartbeat: how often the server reports an idle open request, in seconds; at most
            half of ``expires``. Three missed heartbeats make the driver request again.
        name: label for log lines; ``"<stream>/<consumer>"`` when empty.
        give_back: how to return a message that arrives while the driver stops; a nak (an
            immediate redelivery) when None.
        room: when given, how many more messages the owner can take now; credit never exceeds
            it (minus what is requested already). The owner calls :meth:`poke` when it grows.
        min_batch: the smallest request worth sending; a quarter of ``max_inflight`` when 0.
        group: the priority group to pull in, for a consumer with the ``pinned_client`` policy;
            ``expires`` must then be shorter than its ``priority_timeout``, since only requests
            carrying the pin id keep the pin.
        on_empty: called when a request expires unfilled: the consumer had nothing more.

    Raises:
        ConfigurationError: a limit or interval is out of range.

    The owner must call :meth:`on_reconnected` from the connection's ``reconnected_cb`` (nats-py
    takes only one such callback, at connect time); without it the watchdog still recovers, but
    only after three heartbeat intervals.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        handler: Handler,
        *,
        max_inflight: int,
        expires: float = 30.0,
        idle_heartbeat: float = 5.0,
        name: str = "",
        give_back: Handler | None = None,
        room: Callable[[], int] | None = None,
        min_batch: int = 0,
        group: str | None = None,
        on_empty: Callable[[], None] | None = None,
    ) -> None:
        _check_settings(max_inflight, expires, idle_heartbeat)
        self._nc = nc
        self._give_back_with = give_back
        self._handler = handler
        self._next_subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._leader_subject = f"{_LEADER_ELECTED}.{stream}.{consumer}"
        self._name = name or f"{stream}/{consumer}"
        self._max_inflight = max_inflight
        self._min_batch = max(1, min(min_batch or max_inflight // 4, max_inflight))
        self._room = room
        self._group = group
        self._on_empty = on_empty
        self._pin: str | None = None
        self._expires_ns = int(expires * _NS_PER_S)
        self._heartbeat = idle_heartbeat
        self._heartbeat_ns = int(idle_heartbeat * _NS_PER_S)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._leader_sub: Subscription | None = None
        self._inflight = 0
        self._outstanding = 0
        self._stopping = False
        self._paused = False
        self._backoff = 0.0
        self._alive = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        """Handlers running now."""
        return self._inflight

    @property
    def outstanding(self) -> int:
        """Messages requested from the server and neither delivered nor expired yet."""
        return self._outstanding

    @property
    def pinned(self) -> bool:
        """Whether the server pinned this driver's requests (``group`` only)."""
        return self._pin is not None

    async def start(self) -> None:
        """Subscribe to a fresh inbox and open the first pull request.

        Raises:
            RuntimeError: the driver was started before.
            DFConnectionError: the client is closed or draining.
        """
        if self._sub is not None or self._stopping:
            raise RuntimeError(f"PullConsumer {self._name!r} can be started only once")
        self._inbox = self._nc.new_inbox()
        try:
            self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
            self._leader_sub = await self._nc.subscribe(
                self._leader_subject, cb=self._on_leader_elected
            )
        except nats.errors.Error as exc:
            raise DFConnectionError(
                f"cannot subscribe for consumer {self._name}: {exc}; is the connection open?"
            ) from exc
        self._spawn(self._watch())
        await self._request()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop requesting, wait for running handlers, then unsubscribe.

        Handlers still running after ``timeout`` seconds are cancelled (their messages are
        redelivered after the consumer's ack wait). Messages that arrive meanwhile, from requests
        already open, are nak'ed so another worker gets them at once. Calling it again, or before
        :meth:`start`, does nothing.
        """
        if self._sub is None or self._stopping:
            return
        self._stopping = True
        await self._cancel_background()
        await self._wait_for_handlers(timeout)
        await self._unsubscribe()

    def on_reconnected(self) -> None:
        """Forget the open requests and request again; call it from ``reconnected_cb``.

        A restarted server has forgotten every pull request, so without this the driver would
        wait for credit that never comes back until the watchdog noticed the silence.
        """
        self._request_again()

    def _request_again(self) -> None:
        """Forget the open requests, end a pause, and request all free credit now."""
        if self._sub is None or self._stopping:
            return
        self._outstanding = 0
        self._paused = False  # the pause's reason is gone; its resume only tops up credit
        self._alive.set()
        self._spawn(self._request())

    # --- receiving ----------------------------------------------------------------------------

    async def _on_leader_elected(self, msg: Msg) -> None:
        """A new consumer leader knows none of the requests its predecessor held."""
        logger.info("%s: new consumer leader elected; requesting again", self._name)
        self._request_again()

    async def _on_message(self, msg: Msg) -> None:
        """Subscription callback: dispatch a stream message, or act on a status message."""
        self._alive.set()
        # Stream messages always carry an ack subject, status messages never do; checking it
        # first also keeps a ``Status`` header set by a publisher from passing for one.
        if msg.reply:
            await self._dispatch(msg)
            return
        status = _status_of(msg)
        if status == api.StatusCode.CONTROL_MESSAGE:
            return  # idle heartbeat: liveness is all it says
        if status in (api.StatusCode.REQUEST_TIMEOUT, api.StatusCode.CONFLICT):
            await self._on_request_ended(status, msg)
        elif status == _PIN_LOST:
            await self._on_pin_lost(msg)
        elif status is not None:
            self._on_request_failed(status, msg)
        else:
            logger.warning("%s: ignoring a message without ack subject on the inbox", self._name)

    async def _dispatch(self, msg: Msg) -> None:
        """Spend one unit of credit and run the handler for ``msg`` in its own task."""
        self._outstanding = max(0, self._outstanding - 1)
        if self._group is not None and msg.headers:
            pin = msg.headers.get(_PIN_ID)
            if pin and pin != self._pin:
                self._on_pinned(pin)
        if self._stopping:
            await self._give_back(msg)
            return
        self._backoff = 0.0
        self._inflight += 1
        task = asyncio.create_task(self._run(msg))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _run(self, msg: Msg) -> None:
        """Await the handler, log what it raises, then return its credit."""
        try:
            await self._handler(msg)
        except Exception:
            logger.exception("%s: handler failed for message %s", self._name, msg.reply)
        finally:
            self._inflight -= 1
        await self._request()

    async def _give_back(self, msg: Msg) -> None:
        """Return a message that arrived during :meth:`stop`, so another worker gets it now."""
        if self._give_back_with is not None:
            try:
                await self._give_back_with(msg)
                return
            except Exception as exc:
                logger.warning(
                    "%s: cannot give %s back (%s); naking it", self._name, msg.reply, exc
                )
        try:
            await msg.nak()
        except nats.errors.Error as exc:
            logger.debug("%s: cannot nak %s while stopping: %s", self._name, msg.reply, exc)

    async def _on_request_ended(self, status: str, msg: Msg) -> None:
        """A request expired (408) or was ended by the server (409): take back its credit."""
        self._release_credit(msg)
        if status == api.StatusCode.REQUEST_TIMEOUT and self._on_empty is not None:
            self._on_empty()
        description = _description(msg)
        if status == api.StatusCode.CONFLICT and description in _BACK_OFF_CONFLICTS:
            self._pause(f"pull request refused ({status} {description})")
            return
        if status == api.StatusCode.CONFLICT:
            logger.info("%s: pull request ended: %s %s", self._name, status, description)
        await self._request()

    def _on_pinned(self, pin: str) -> None:
        """The server pinned us: pull with the id from now on.

        The standby requests still open are void for a pinned client (the server serves only
        requests with the id), so their credit is taken back and asked for again at once;
        otherwise the driver would idle until they expired.
        """
        logger.debug("%s: pinned (%s)", self._name, pin)
        self._pin = pin
        self._outstanding = 0
        self._spawn(self._request())

    async def _on_pin_lost(self, msg: Msg) -> None:
        """The pin moved to another client (ours lapsed or was released): stand by again.

        Every open request carried the old id, so all of them are void.
        """
        if self._pin is not None:
            logger.info("%s: pin lost (%s); standing by", self._name, _description(msg))
        self._pin = None
        self._outstanding = 0
        await self._request()

    def _on_request_failed(self, status: str, msg: Msg) -> None:
        """Any other status (503: no consumer or no JetStream, 400: bad request): back off."""
        self._outstanding = 0
        self._pause(f"pull request failed ({status} {_description(msg)})")

    def _release_credit(self, msg: Msg) -> None:
        """Subtract the unfulfilled messages a 408/409 reports; all of them when it does not."""
        pending = msg.headers.get(_PENDING_MESSAGES) if msg.headers else None
        if pending is None or not pending.strip().isdigit():
            self._outstanding = 0
        else:
            self._outstanding = max(0, self._outstanding - int(pending))

    # --- requesting ---------------------------------------------------------------------------

    def _credit(self) -> int:
        """How many messages to request now: 0 unless a worthwhile batch is free."""
        if self._stopping or self._paused or self._sub is None or not self._nc.is_connected:
            return 0
        free = self._max_inflight - self._inflight - self._outstanding
        if self._room is not None:
            free = min(free, self._room() - self._outstanding)
        if free >= self._min_batch:
            return free
        if self._room is not None and free >= 1 and not self._outstanding:
            return free  # a small batch too when nothing is asked for: never wait for room
        return 0

    def poke(self) -> None:
        """Request now if the owner's room (see ``room``) makes a batch worthwhile."""
        if self._credit():
            self._spawn(self._request())

    async def _request(self) -> None:
        """Publish one pull request for all free credit, if enough is free."""
        batch = self._credit()
        if batch == 0:
            return
        self._outstanding += batch
        request: dict[str, object] = {
            "batch": batch,
            "expires": self._expires_ns,
            "idle_heartbeat": self._heartbeat_ns,
        }
        if self._group is not None:
            request["group"] = self._group
            if self._pin is not None:
                request["id"] = self._pin
        body = json.dumps(request).encode()
        try:
            await self._nc.publish(self._next_subject, body, reply=self._inbox)
        except nats.errors.Error as exc:
            self._outstanding -= batch  # never sent; the watchdog asks again later
            logger.warning("%s: cannot send pull request: %s", self._name, exc)

    def _pause(self, reason: str) -> None:
        """Stop requesting for a while: 1 s, doubling per failure in a row, at most 10 s."""
        if self._paused or self._stopping:
            return
        self._paused = True
        self._backoff = min(_BACKOFF_MAX, self._backoff * 2) if self._backoff else _BACKOFF_FIRST
        logger.warning("%s: %s; pulling again in %.0f s", self._name, reason, self._backoff)
        self._spawn(self._resume_after(self._backoff))

    async def _resume_after(self, delay: float) -> None:
        """End a pause after ``delay`` seconds and request again."""
        await asyncio.sleep(delay)
        self._paused = False
        await self._request()

    # --- watchdog -----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Re-request whenever the inbox is silent for three heartbeat intervals."""
        stall_after = _MISSED_HEARTBEATS * self._heartbeat
        timeout = stall_after
        while True:
            self._alive.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._alive.wait()
            except TimeoutError:
                timeout = await self._on_silence(stall_after)
            else:
                timeout = stall_after

    async def _on_silence(self, stall_after: float) -> float:
        """Handle a silent inbox; return how long to wait before the next check."""
        if not self._nc.is_connected:
            return self._heartbeat  # poll, publishing now would only buffer
        if self._outstanding:
            logger.warning(
                "%s: no message or heartbeat for %.1f s with %d messages requested; "
                "assuming the requests were lost and requesting again",
                self._name,
                stall_after,
                self._outstanding,
            )
            self._outstanding = 0
        await self._request()
        return stall_after

    # --- shutting down ------------------------------------------------------------------------

    async def _wait_for_handlers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running handlers; cancel the stragglers."""
        if not self._handlers:
            return
        _, pending = await asyncio.wait(set(self._handlers), timeout=timeout)
        if not pending:
            return
        logger.warning(
            "%s: cancelling %d handlers still running after %.1f s",
            self._name,
            len(pending),
            timeout,
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _cancel_background(self) -> None:
        """Cancel the watchdog, a pending back-off and queued requests, and wait for them."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _unsubscribe(self) -> None:
        """Drop the inbox subscription; the server then discards the requests still open."""
        assert self._sub is not None
        try:
            await self._sub.unsubscribe()
            if self._leader_sub is not None:
                await self._leader_sub.unsubscribe()
        except nats.errors.Error as exc:
            logger.debug("%s: unsubscribe failed: %s", self._name, exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a background task that :meth:`stop` cancels."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _description(msg: Msg) -> str:
    """The text after the code in a status message, such as ``"Consumer Deleted"``."""
    return msg.headers.get(api.Header.DESCRIPTION, "") if msg.headers else ""


def _check_settings(max_inflight: int, expires: float, idle_heartbeat: float) -> None:
    """Refuse values the server rejects or that would make the driver spin."""
    if max_inflight < 1:
        raise ConfigurationError(f"max_inflight must be at least 1, got {max_inflight}")
    if idle_heartbeat <= 0:
        raise ConfigurationError(f"idle_heartbeat must be positive, got {idle_heartbeat}")
    if expires < 2 * idle_heartbeat:
        raise ConfigurationError(
            f"expires ({expires} s) must be at least twice idle_heartbeat ({idle_heartbeat} s); "
            "the server rejects shorter requests with 'heartbeat value too large'"
        )
