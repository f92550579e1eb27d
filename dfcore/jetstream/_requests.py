"""JetStream's API over one connection: request/reply, acked publishes, direct gets.

Every call the engine makes to JetStream goes through :class:`JetStreamAPI`, so no ``nats``
exception reaches the rest of the code: :func:`wrap` turns them into ours, with the cause
chained. :class:`Replies` is the request/reply machinery under it, with what a cluster needs
(waiting out a leader election, resending what a dropped connection lost).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import APIError

from dfcore.core._errors import DFConnectionError, DFError
from dfcore.jetstream._naming import Layout

log = logging.getLogger("dfcore.store")

WRONG_LAST_SEQUENCE = 10071
# A replicated stream's leader refuses with this one (no sequence in the message) when
# another append to the same subject is still being replicated: the same conflict.
WRONG_LAST_SEQUENCE_REPLICATED = 10164
PUBLISH_TRIES = 3  # sends of an unanswered publish that carries a message id


class AppendConflict(DFError):
    """Another writer appended to the history since we last read it (or the id exists)."""


class JetStreamAPI:
    """The JetStream calls of one namespace, over one connection."""

    def __init__(self, nc: NATS, layout: Layout) -> None:
        self.nc = nc
        self.layout = layout
        self.replies = Replies(nc)

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], doing: str
    ) -> int:
        """An acked JetStream publish; returns the stream sequence (of the original, if a dup)."""
        try:
            reply = await self._request_answered(subject, payload, headers)
        except NoResponders:
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
                reply: Msg = await self.replies.request(subject, payload, headers)
                return reply
            except DFConnectionError as exc:
                log.warning("%s; sending it again with the same message id", exc)
        reply = await self.replies.request(subject, payload, headers)
        return reply

    async def direct_get(
        self, request: Mapping[str, Any], *, batch: bool = True, stream: str | None = None
    ) -> Any:
        """A direct get: ``(messages, more_pending)`` for batches, else the reply message."""
        stream = stream or self.layout.history_stream
        subject = f"$JS.API.DIRECT.GET.{stream}"
        try:
            result = await self.replies.request(subject, orjson.dumps(request), None, batch=batch)
        except NoResponders:
            raise DFError(
                f"stream {stream} does not exist, or on a cluster has no leader and no current "
                "replica (are a majority of its replicas up?)"
            ) from None
        return result

    async def get_one(
        self, request: Mapping[str, Any], subject: str, *, stream: str | None = None
    ) -> Msg | None:
        """A single-message direct get; None when there is no such message."""
        msg: Msg = await self.direct_get(request, batch=False, stream=stream)
        status = reply_status(msg)
        if status == "404":
            return None
        if status is not None:
            raise DFConnectionError(
                f"JetStream read of {subject} failed: {status} {description(msg)}"
            )
        return msg

    async def consumer_api(self, action: str, body: bytes, doing: str) -> dict[str, Any]:
        try:
            reply = await self.replies.request(f"$JS.API.CONSUMER.{action}", body, None)
        except Exception as exc:
            raise wrap(exc, doing) from exc
        answer: dict[str, Any] = orjson.loads(reply.data or b"{}")
        error = answer.get("error")
        if error:
            raise DFError(
                f"JetStream refused {doing}: {error.get('description')} "
                f"(code {error.get('err_code')})"
            )
        return answer


class Replies:
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
                    AnswerLost(
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
            except NoResponders:
                if loop.time() + pause > give_up:
                    raise
            except AnswerLost:
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
            self.future.set_exception(NoResponders())
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
                DFConnectionError(f"JetStream read failed: {status} {description(msg)}")
            )

    def expire(self, subject: str, timeout: float) -> None:
        if not self.future.done():
            self.future.set_exception(
                DFConnectionError(
                    f"no answer from JetStream within {timeout}s ({subject}); is the server up, "
                    "JetStream enabled, and the stream's leader elected?"
                )
            )


class AnswerLost(DFConnectionError):
    """The connection dropped, and came back, while a request waited for its answer."""


class NoResponders(DFError):
    """Nothing listens on the subject (no such stream, or on a cluster no leader yet)."""


def description(msg: Msg) -> str:
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


def wrap(exc: BaseException, doing: str) -> DFError:
    if isinstance(exc, DFError):
        return exc
    if isinstance(exc, APIError):
        return DFError(f"JetStream refused {doing}: {exc.description} (code {exc.err_code})")
    return DFConnectionError(
        f"lost contact with NATS while {doing} ({type(exc).__name__}: {exc}); "
        "check that the server is running and reachable"
    )
