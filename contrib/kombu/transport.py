"""The kombu transport ``dfnats://``: Celery's broker on NATS JetStream.

Every queue is a durable pull consumer of one file-storage stream (``KOMBU``), and routing is
done by the server through subjects (see ``_subjects``). A message stays stored until Celery
acknowledges it: ``ack`` acknowledges it on the server, ``reject(requeue=True)`` asks for
redelivery at once, ``reject(requeue=False)`` terminates it, and messages a closing channel
still holds are handed back for redelivery. A consumer pulls no more than ``prefetch_count``
messages it has not settled. The visibility timeout is the consumer's ack wait: a process that
dies stops extending it, and its messages go to another worker once it runs out; a live process
extends it for every message it holds, so a long task or an ETA task waiting in the worker is
never delivered twice.

The URL's virtual host keeps apps apart on one server: ``dfnats://host:4222/shop`` uses the
stream ``KOMBU-shop`` and subjects ``kombu-shop.x.>``; without one, ``KOMBU`` and ``kombu.x.>``.
Transport options (``broker_transport_options``): ``visibility_timeout`` (seconds, 300),
``stream`` and ``prefix`` (of the subjects) to name them yourself, ``replicas`` (1) and
``max_in_flight`` (unacknowledged messages per queue, across all workers: 10000).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import queue as queues
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from kombu.exceptions import ChannelError
from kombu.transport import virtual
from nats.aio.msg import Msg
from nats.js import api

from . import _subjects
from ._bridge import bridge
from ._errors import CONNECTION_ERRORS
from ._pull import pull
from ._qos import QoS

log = logging.getLogger("dfcore.contrib.kombu")
_T = TypeVar("_T")

_BATCH = 64  # messages asked for in one pull, at most
_OP_TIMEOUT = 10.0  # seconds a publish or a management call may take


class Channel(virtual.Channel):
    """A kombu channel whose queues are JetStream consumers."""

    QoS = QoS
    supports_fanout = True
    visibility_timeout = 300.0
    max_in_flight = 10_000
    replicas = 1
    from_transport_options = (  # type: ignore[assignment]
        *virtual.Channel.from_transport_options,
        "visibility_timeout",
        "max_in_flight",
        "replicas",
    )
    connection: Transport

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.prefix, self.stream = connection.prefix, connection.stream
        self.visibility_timeout = float(self.visibility_timeout)
        self.ack_wait = self.visibility_timeout  # the shortest of this channel's queues
        self._lock = threading.Lock()
        self._held: dict[str, Msg] = {}  # delivery tag -> message, until it is settled
        self._reserved = 0  # pulled (or being pulled) and not delivered yet
        self._pullers: dict[str, Any] = {}
        self._to_pull: dict[str, bool] = {}
        self._no_ack: dict[str, bool] = {}
        self._pulled: dict[int, Msg] = {}  # pulled and not delivered yet
        self._wake = asyncio.Event()
        self._waiting: collections.deque[tuple[str, Msg, bool]] = collections.deque()

    # -- queues and bindings ------------------------------------------------------------------

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``make(jetstream)`` on the loop and wait for it."""
        return bridge.run(make(self.connection.jetstream()), timeout=_OP_TIMEOUT)

    def _consumer_config(self, queue: str, **kwargs: Any) -> api.ConsumerConfig:
        arguments = kwargs.get("arguments") or {}
        expires = arguments.get("x-expires")
        auto_delete = 300.0 if kwargs.get("auto_delete") else None
        return api.ConsumerConfig(
            durable_name=_subjects.consumer_name(queue),
            description=f"kombu queue {queue}",
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.visibility_timeout,
            max_deliver=-1,
            max_ack_pending=int(self.max_in_flight),
            filter_subjects=[_subjects.queue_filter(self.prefix, queue)],
            inactive_threshold=float(expires) / 1000 if expires else auto_delete,
        )

    async def _info(self, js: Any, queue: str) -> api.ConsumerInfo | None:
        try:
            info: api.ConsumerInfo = await js.consumer_info(
                self.stream, _subjects.consumer_name(queue)
            )
        except nats.js.errors.NotFoundError:
            return None
        return info

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        async def declare(js: Any) -> api.ConsumerInfo:
            info = await self._info(js, queue)
            if info is None:
                info = await js.add_consumer(self.stream, self._consumer_config(queue, **kwargs))
            return info

        info = self._run(declare)
        # The queue's ack wait is the one it was made with (maybe by another process, with
        # another visibility_timeout): held messages are extended in time for that one.
        self.ack_wait = min(self.ack_wait, float(info.config.ack_wait or self.visibility_timeout))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self._run(lambda js: self._info(js, queue)) is not None

    def _size(self, queue: str) -> int:
        info = self._run(lambda js: self._info(js, queue))
        return int(info.num_pending or 0) if info else 0

    def _purge(self, queue: str) -> int:
        """Drop the queue's ready messages: its consumer starts again from now."""

        async def purge(js: Any) -> int:
            info = await self._info(js, queue)
            if info is None:
                return 0
            await js.delete_consumer(self.stream, info.name)
            await js.add_consumer(self.stream, info.config)
            return int(info.num_pending or 0)

        return self._run(purge)

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **_: Any
    ) -> None:
        if if_empty and self._size(queue):
            return

        async def delete(js: Any) -> None:
            try:
                await js.delete_consumer(self.stream, _subjects.consumer_name(queue))
            except nats.js.errors.NotFoundError:
                pass

        self._run(delete)
        self.state.queue_bindings_delete(queue)

    def queue_bind(
        self,
        queue: str,
        exchange: Any = None,
        routing_key: Any = "",
        arguments: Any = None,
        **_: Any,
    ) -> None:
        exchange, routing_key = exchange or "", routing_key or ""
        added = self._filters(exchange, routing_key)
        if not self.state.has_binding(queue, exchange, routing_key):
            self.state.binding_declare(queue, exchange, routing_key, arguments)
        self._refilter(queue, lambda filters: [*filters, *added])

    def queue_unbind(
        self,
        queue: str,
        exchange: Any = None,
        routing_key: Any = "",
        arguments: Any = None,
        **_: Any,
    ) -> None:
        exchange, routing_key = exchange or "", routing_key or ""
        gone = set(self._filters(exchange, routing_key))
        self.state.binding_delete(queue, exchange, routing_key)
        kept = [  # a binding the one removed covered (minimal() dropped it) comes back
            f
            for binding in self.state.queue_bindings(queue)
            for f in self._filters(binding.exchange, binding.routing_key)
        ]
        self._refilter(queue, lambda filters: [*(f for f in filters if f not in gone), *kept])

    def _filters(self, exchange: str, routing_key: str) -> list[str]:
        kind = self.typeof(exchange).type if exchange else "direct"
        return _subjects.binding_filters(self.prefix, exchange, kind, routing_key)

    def _refilter(self, queue: str, change: Callable[[list[str]], list[str]]) -> None:
        """Change the filter subjects (the bindings) of ``queue``'s consumer."""

        async def refilter(js: Any) -> None:
            info = await self._info(js, queue)
            if info is None:
                raise ChannelError(f"NOT_FOUND - no queue {queue!r} to bind")
            config = info.config
            now = list(config.filter_subjects or filter(None, [config.filter_subject]))
            own = _subjects.queue_filter(self.prefix, queue)
            wanted = _subjects.minimal([own, *change(now)])
            if sorted(wanted) != sorted(now):
                config.filter_subject = None
                config.filter_subjects = wanted
                try:
                    await js.add_consumer(self.stream, config)
                except nats.js.errors.BadRequestError as exc:
                    raise ChannelError(
                        f"queue {queue!r} cannot have the bindings {wanted}: {exc.description}; "
                        "on NATS, two bindings of one queue may not match a routing key in "
                        "common unless one includes the other (order.* and order.paid may "
                        "be bound together, order.* and *.paid may not)"
                    ) from None

        self._run(refilter)

    # -- publishing -----------------------------------------------------------------------------

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **_: Any
    ) -> None:
        """Store the message; the server routes it to every queue bound to its subject."""
        self._inplace_augment_message(message, exchange, routing_key)
        subject = _subjects.message_subject(self.prefix, exchange or "", routing_key or "")
        headers = None
        expiration = message["properties"].get("expiration")
        if expiration:  # milliseconds, as AMQP has it; the server keeps whole seconds
            headers = {"Nats-TTL": f"{max(1, math.ceil(float(expiration) / 1000))}s"}
        data = json.dumps(message).encode()
        self._run(lambda js: js.publish(subject, data, stream=self.stream, headers=headers))

    # -- consuming ------------------------------------------------------------------------------

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        result = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        self._to_pull[queue] = self._no_ack[queue] = no_ack  # pulled from the first drain
        return result

    def _start_pulling(self) -> None:
        if not self._to_pull:
            return
        self.connection.jetstream()  # connected, if it was not
        nc = self.connection._nc
        started = []
        with self._lock:
            while self._to_pull:
                queue, no_ack = self._to_pull.popitem()
                if queue in self._active_queues and queue not in self._pullers:
                    self._pullers[queue] = bridge.submit(pull(self, nc, queue, no_ack))
                    started.append((queue, self._pullers[queue]))
        for queue, puller in started:  # outside the lock: a puller done already calls back now
            puller.add_done_callback(lambda done, queue=queue: self._puller_ended(queue, done))

    def _puller_ended(self, queue: str, done: Any) -> None:
        if done.cancelled():
            return
        with self._lock:
            if self._pullers.get(queue) is done and not self.closed:
                del self._pullers[queue]
                self._to_pull[queue] = self._no_ack.get(queue, False)  # again at the next drain
        error = done.exception()
        if error is not None:
            log.error("pulling from queue %r stopped: %r; starting again", queue, error)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            puller = self._pullers.pop(queue, None)
            if puller is not None:
                puller.cancel()
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **_: Any) -> Any:
        """One message from ``queue`` if one is ready, else None."""

        async def get_one(js: Any) -> Msg | None:
            sub = await js.pull_subscribe_bind(_subjects.consumer_name(queue), stream=self.stream)
            try:
                got = await sub.fetch(1, timeout=0.5)
            except nats.errors.TimeoutError:
                return None
            finally:
                await sub.unsubscribe()
            return got[0] if got else None

        msg = self._run(get_one)
        if msg is None:
            return None
        with self._lock:
            self._reserved += 1
        payload = self._take(msg, no_ack)
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False
    ) -> None:
        super().basic_qos(prefetch_size, prefetch_count, apply_global)
        self._wake_pullers()

    def _credit(self) -> int:
        """Reserve how many more messages this channel may pull now."""
        with self._lock:
            limit = int(self.qos.prefetch_count or 0)
            room = _BATCH if not limit else limit - len(self._held) - self._reserved
            share = -(-limit // max(len(self._pullers), 1)) if limit else _BATCH
            wanted = max(0, min(room, share, _BATCH))  # each queue's puller gets its share
            self._reserved += wanted
            return wanted

    def _release(self, unused: int) -> None:
        """Give back credit a pull request reserved and did not use (another queue's puller
        may take it)."""
        if unused > 0:
            with self._lock:
                self._reserved -= unused
            self._wake.set()  # called on the loop

    def _wake_pullers(self) -> None:
        bridge.call_soon(self._wake.set)

    def _take(self, msg: Msg, no_ack: bool) -> dict[str, Any]:
        """The kombu message of ``msg``, with a delivery tag of its own; held until settled."""
        payload = json.loads(msg.data)  # ValueError if it is not JSON
        if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
            raise ValueError("no kombu properties")
        properties = payload["properties"]
        tag = uuid.uuid4().hex
        properties["delivery_tag"] = tag
        if msg.metadata.num_delivered > 1:
            payload["redelivered"] = True
            properties.setdefault("delivery_info", {})["redelivered"] = True
        with self._lock:
            self._reserved -= 1
            self._pulled.pop(id(msg), None)
            if not no_ack:
                self._held[tag] = msg
        if no_ack:
            bridge.submit(_settle(msg, "ack"))
            self._wake_pullers()
        return payload

    def _settle(self, delivery_tag: str, how: str) -> None:
        with self._lock:
            msg = self._held.pop(delivery_tag, None)
        if msg is not None:
            bridge.submit(_settle(msg, how))
            self._wake_pullers()
            if self.connection is not None:  # the consuming thread may deliver one more
                self.connection._inbox.put(None)

    def _drop(self, msg: Msg, queue: str, error: Exception) -> None:
        """A message that is not a kombu message (not JSON, no properties): terminated."""
        with self._lock:
            self._reserved -= 1
            self._pulled.pop(id(msg), None)
        log.warning(
            "queue %r: message %s of stream %s is not a kombu message (%s); terminated",
            queue,
            msg.metadata.sequence.stream,
            self.stream,
            error,
        )
        bridge.submit(_settle(msg, "term"))

    def _hand_back(self, msg: Msg) -> None:
        """A message pulled but not delivered (its channel closed): redeliver it now."""
        with self._lock:
            self._reserved -= 1
            self._pulled.pop(id(msg), None)
        bridge.submit(_settle(msg, "nak"))

    def held(self) -> list[Msg]:
        """The messages this channel holds unsettled, delivered or waiting to be."""
        with self._lock:
            return [*self._held.values(), *self._pulled.values()]

    def close(self) -> None:
        for puller in self._pullers.values():
            puller.cancel()
        self._pullers.clear()
        while self._waiting:  # pulled, not delivered: redelivered now, not after the ack wait
            self._hand_back(self._waiting.popleft()[1])
        super().close()


async def _settle(msg: Msg, how: str) -> None:
    try:
        await getattr(msg, how)()
    except Exception as exc:  # the server redelivers after the ack wait anyway
        log.debug("could not %s a message: %r", how, exc)


class Transport(virtual.Transport):
    """``dfnats://host:port``: kombu on NATS JetStream (see the module's docstring)."""

    Channel = Channel
    default_port = 4222  # type: ignore[assignment]
    driver_type = "nats"
    driver_name = "nats-py"
    connection_errors = (*virtual.Transport.connection_errors, *CONNECTION_ERRORS)
    channel_errors = (*virtual.Transport.channel_errors, nats.js.errors.APIError)  # type: ignore[assignment]
    implements = virtual.Transport.implements.extend(
        asynchronous=False,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        #: pulled messages on their way to a channel, and None when a settle made room
        self._inbox: queues.SimpleQueue[tuple[Channel, str, Msg, bool] | None] = (
            queues.SimpleQueue()
        )
        self._nc: Any = None
        self._extender: Any = None
        options = client.transport_options
        prefix, stream = _subjects.vhost_names(client.virtual_host or "/")
        self.prefix = str(options.get("prefix", prefix))
        self.stream = str(options.get("stream", stream))

    def driver_version(self) -> str:
        from nats.aio.client import __version__

        return str(__version__)

    def jetstream(self) -> Any:
        """The JetStream context of this process's connection (made again if it was closed)."""
        if self._nc is None or self._nc.is_closed:
            client: Any = self.client
            ssl = client.ssl
            self._nc, _ = bridge.connect(
                self._servers(),
                name=client.transport_options.get("client_name", "kombu"),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=float(client.connect_timeout or 4),
                **({"tls": ssl} if ssl and not isinstance(ssl, bool) else {}),
            )
        return self._nc.jetstream()

    def establish_connection(self) -> Any:
        js = self.jetstream()
        options: dict[str, Any] = getattr(self.client, "transport_options", {})
        bridge.run(self._ensure_stream(js, options), timeout=_OP_TIMEOUT)
        if self._extender is None:
            self._extender = bridge.submit(self._extend())
        return super().establish_connection()

    def _servers(self) -> list[str]:
        client: Any = self.client
        tls = bool(client.ssl) or client.transport_cls == "dfnatss"
        scheme = "tls" if tls else "nats"
        auth = ""
        if client.userid:
            auth = f"{client.userid}:{client.password or ''}@"
        hosts = [
            f"{scheme}://{auth}{client.hostname or '127.0.0.1'}:{client.port or self.default_port}"
        ]
        for alt in getattr(client, "alt", None) or []:  # failover URLs: a;b
            parts = urlsplit(alt)
            if parts.netloc:
                hosts.append(f"{scheme}://{parts.netloc}")
        return list(dict.fromkeys(hosts))

    async def _ensure_stream(self, js: Any, options: dict[str, Any]) -> None:
        name, prefix = self.stream, self.prefix
        try:
            await js.stream_info(name)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = api.StreamConfig(
            name=name,
            description="kombu messages (dfcore.contrib.kombu)",
            subjects=[f"{prefix}.x.>"],
            retention=api.RetentionPolicy.INTEREST,
            storage=api.StorageType.FILE,
            num_replicas=int(options.get("replicas", Channel.replicas)),
            allow_msg_ttl=True,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            try:
                await js.stream_info(name)  # made meanwhile by another process
            except nats.js.errors.NotFoundError:
                raise ChannelError(
                    f"cannot make the stream {name!r} for the subjects {prefix}.x.>: the server "
                    "refused it; set the transport options 'stream' and 'prefix' to names no "
                    "other stream uses"
                ) from None

    async def _extend(self) -> None:
        """Keep every held message's ack wait from running out while this process lives."""
        loop = asyncio.get_running_loop()
        while True:
            waits = [ch.ack_wait for ch in list(self.channels)] or [Channel.visibility_timeout]
            every = max(min(waits) / 4, 0.2)
            due = loop.time() + every
            await asyncio.sleep(every)
            late = loop.time() - due
            if late > every:  # the process was starved: its messages may have gone elsewhere
                log.warning(
                    "extending ack waits ran %.1fs late (the ack wait is %.1fs)", late, min(waits)
                )
            try:
                for channel in list(self.channels):
                    for msg in channel.held():
                        await msg.in_progress()
            except Exception as exc:  # tried again next round
                log.warning("could not extend the ack wait of held messages: %r", exc)

    def drain_events(self, connection: Any, timeout: float | None = None, **_: Any) -> None:
        """Deliver the messages pulled so far, waiting up to ``timeout`` for one; a message
        beyond a channel's prefetch count waits in the channel until a settle makes room."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for channel in list(self.channels):
            channel._start_pulling()
        while not self._deliver_waiting():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError()
            try:
                item = self._inbox.get(timeout=left)
            except queues.Empty:
                raise TimeoutError() from None
            if item is not None:  # None: a settle made room
                self._arrived(item)

    @staticmethod
    def _arrived(item: tuple[Any, str, Msg, bool]) -> None:
        channel = item[0]
        if channel.closed:
            channel._hand_back(item[2])
        else:
            channel._waiting.append(item[1:])

    def _deliver_waiting(self) -> bool:
        """Deliver what each channel may take now; whether anything was delivered."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queues.Empty:
                break
            if item is not None:
                self._arrived(item)
        delivered = False
        for channel in list(self.channels):
            while channel._waiting and (channel.closed or channel.qos.can_consume()):
                queue, msg, no_ack = channel._waiting.popleft()
                callback = self._callbacks.get(queue)
                if channel.closed or callback is None:
                    channel._hand_back(msg)
                    continue
                try:
                    payload = channel._take(msg, no_ack)
                except ValueError as exc:  # not a kombu message: ended, named, not redelivered
                    channel._drop(msg, queue, exc)
                    continue
                callback(payload)
                delivered = True
        return delivered

    def close_connection(self, connection: Any) -> None:
        super().close_connection(connection)  # closes each channel: they hand back what waits
        while True:
            try:
                item = self._inbox.get_nowait()
            except queues.Empty:
                break
            if item is not None:
                item[0]._hand_back(item[2])
        if self._extender is not None:
            self._extender.cancel()
            self._extender = None
