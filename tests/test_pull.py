"""PullConsumer against a real nats-server: delivery, credit, failures, shutdown and restarts."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from dfcore.core._errors import ConfigurationError
from dfcore.jetstream._pull import PullConsumer
from dfcore.jetstream._server import EmbeddedServer

DEADLINE = 30.0  # seconds any single wait in these tests may take before it counts as a hang


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """A connection to the session's nats-server, closed after the test."""
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def make_consumer(js: JetStreamContext, namespace: str, ack_wait: float = 5.0) -> str:
    """Create stream ``namespace`` on ``<namespace>.>`` and its durable pull consumer "work"."""
    await js.add_stream(name=namespace, subjects=[f"{namespace}.>"])
    config = ConsumerConfig(
        durable_name="work", ack_policy=AckPolicy.EXPLICIT, max_deliver=-1, ack_wait=ack_wait
    )
    await js.add_consumer(namespace, config)
    return "work"


async def publish(js: JetStreamContext, subject: str, count: int) -> None:
    """Publish ``count`` messages to JetStream, a few hundred acknowledged publishes at a time."""
    for start in range(0, count, 200):
        batch = range(start, min(count, start + 200))
        await asyncio.gather(*(js.publish(subject, b"%d" % i) for i in batch))


async def drained(js: JetStreamContext, stream: str, consumer: str) -> None:
    """Return once the consumer has nothing pending and nothing awaiting an ack."""
    while True:
        info = await js.consumer_info(stream, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.02)  # poll interval; the caller's wait_for sets the deadline


async def waiting(js: JetStreamContext, stream: str, consumer: str) -> None:
    """Return once the server holds a pull request for the consumer."""
    while (await js.consumer_info(stream, consumer)).num_waiting == 0:
        await asyncio.sleep(0.02)  # poll interval; the caller's wait_for sets the deadline


class Recorder:
    """A handler that acks and counts deliveries by stream sequence, signalling at a target."""

    def __init__(self, target: int, work: Callable[[Msg], Awaitable[None]] | None = None):
        self.target = target
        self.work = work
        self.seen: Counter[int] = Counter()
        self.done = asyncio.Event()

    def expect(self, target: int) -> None:
        """Signal again once ``target`` distinct messages were handled."""
        self.target = target
        self.done.clear()

    async def __call__(self, msg: Msg) -> None:
        if self.work is not None:
            await self.work(msg)
        await msg.ack()
        self.seen[msg.metadata.sequence.stream] += 1
        if len(self.seen) >= self.target:
            self.done.set()


@asynccontextmanager
async def pulling(pc: PullConsumer) -> AsyncIterator[PullConsumer]:
    """Start ``pc`` and stop it on the way out, even when the test fails."""
    await pc.start()
    try:
        yield pc
    finally:
        await pc.stop(timeout=5)


async def test_every_message_handled_once_and_acked(nc: Client, namespace: str) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace)
    await publish(js, f"{namespace}.a", 2000)
    recorder = Recorder(2000)

    async with pulling(PullConsumer(nc, namespace, consumer, recorder, max_inflight=64)):
        await asyncio.wait_for(recorder.done.wait(), DEADLINE)
        await asyncio.wait_for(drained(js, namespace, consumer), DEADLINE)

    assert sorted(recorder.seen) == list(range(1, 2001))
    assert set(recorder.seen.values()) == {1}


async def test_inflight_never_exceeds_max(nc: Client, namespace: str) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace)
    await publish(js, f"{namespace}.a", 400)
    running = peak = 0
    pc: PullConsumer | None = None

    async def work(msg: Msg) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert pc is not None and pc.inflight <= 8
        await asyncio.sleep(0.002)  # simulated work, so handlers overlap
        running -= 1

    recorder = Recorder(400, work)
    pc = PullConsumer(nc, namespace, consumer, recorder, max_inflight=8)
    async with pulling(pc):
        await asyncio.wait_for(recorder.done.wait(), DEADLINE)

    assert peak == 8  # the limit was reached, and never passed
    assert pc.inflight == 0


async def test_failing_handler_does_not_stop_delivery(
    nc: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace, ack_wait=1.0)
    await publish(js, f"{namespace}.a", 20)
    deliveries: dict[int, list[int]] = {}

    async def work(msg: Msg) -> None:
        meta = msg.metadata
        deliveries.setdefault(meta.sequence.stream, []).append(meta.num_delivered)
        if meta.sequence.stream == 3 and meta.num_delivered == 1:
            raise RuntimeError("boom")

    recorder = Recorder(20, work)
    with caplog.at_level(logging.ERROR, logger="dfcore.pull"):
        async with pulling(PullConsumer(nc, namespace, consumer, recorder, max_inflight=4)):
            await asyncio.wait_for(recorder.done.wait(), DEADLINE)
            await asyncio.wait_for(drained(js, namespace, consumer), DEADLINE)

    assert deliveries[3] == [1, 2]  # redelivered after ack_wait, then acked
    assert all(deliveries[seq] == [1] for seq in range(1, 21) if seq != 3)
    assert "handler failed" in caplog.text and "boom" in caplog.text


async def test_stop_waits_for_running_handler(nc: Client, namespace: str) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace)
    await publish(js, f"{namespace}.a", 1)
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(msg: Msg) -> None:
        started.set()
        await release.wait()
        await msg.ack()
        finished.set()

    pc = PullConsumer(nc, namespace, consumer, handler, max_inflight=4)
    await pc.start()
    await asyncio.wait_for(started.wait(), DEADLINE)
    stopping = asyncio.create_task(pc.stop(timeout=DEADLINE))
    done, _ = await asyncio.wait({stopping}, timeout=0.2)
    assert not done and not finished.is_set() and pc.inflight == 1

    release.set()
    await asyncio.wait_for(stopping, DEADLINE)
    assert finished.is_set() and pc.inflight == 0
    await asyncio.wait_for(drained(js, namespace, consumer), DEADLINE)


async def test_stop_cancels_handlers_after_timeout(nc: Client, namespace: str) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace)
    await publish(js, f"{namespace}.a", 1)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(msg: Msg) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    pc = PullConsumer(nc, namespace, consumer, handler, max_inflight=4)
    await pc.start()
    await asyncio.wait_for(started.wait(), DEADLINE)
    await asyncio.wait_for(pc.stop(timeout=0.1), DEADLINE)
    assert cancelled.is_set() and pc.inflight == 0


async def test_resumes_after_consumer_is_recreated(
    nc: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    consumer = await make_consumer(js, namespace)
    recorder = Recorder(5)
    with caplog.at_level(logging.WARNING, logger="dfcore.pull"):
        async with pulling(PullConsumer(nc, namespace, consumer, recorder, max_inflight=4)):
            await asyncio.wait_for(waiting(js, namespace, consumer), DEADLINE)
            await js.delete_consumer(namespace, consumer)
            config = ConsumerConfig(durable_name=consumer, ack_policy=AckPolicy.EXPLICIT)
            await js.add_consumer(namespace, config)
            await publish(js, f"{namespace}.a", 5)
            await asyncio.wait_for(recorder.done.wait(), DEADLINE)
    assert "Consumer Deleted" in caplog.text


@pytest.mark.parametrize(
    ("max_inflight", "expires", "idle_heartbeat"),
    [(0, 30.0, 5.0), (8, 30.0, 0.0), (8, 1.0, 0.9)],
)
def test_rejects_bad_settings(max_inflight: int, expires: float, idle_heartbeat: float) -> None:
    async def handler(msg: Msg) -> None:
        pass

    with pytest.raises(ConfigurationError):
        PullConsumer(
            None,  # type: ignore[arg-type]  # never reached: the settings are checked first
            "s",
            "c",
            handler,
            max_inflight=max_inflight,
            expires=expires,
            idle_heartbeat=idle_heartbeat,
        )


async def publish_until_accepted(js: JetStreamContext, subject: str, count: int) -> None:
    """Publish after a restart, retrying while JetStream is not answering yet."""
    while True:
        try:
            await publish(js, subject, count)
            return
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await asyncio.sleep(0.1)  # JetStream still recovering; the caller sets the deadline


@pytest.mark.slow
@pytest.mark.parametrize("wire_reconnect", [True, False], ids=["on_reconnected", "watchdog"])
async def test_survives_server_restart(
    tmp_path: Path, namespace: str, wire_reconnect: bool
) -> None:
    # Its own server: killing the session's one would disturb every other test.
    server = EmbeddedServer(tmp_path / "nats", log_file=str(tmp_path / "nats.log"))
    reconnected = asyncio.Event()
    pc: PullConsumer | None = None

    async def on_reconnect() -> None:
        reconnected.set()
        if wire_reconnect and pc is not None:
            pc.on_reconnected()

    with server:
        nc = await nats.connect(
            server.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            reconnected_cb=on_reconnect,
        )
        try:
            js = nc.jetstream()
            consumer = await make_consumer(js, namespace)
            # A long heartbeat means only on_reconnected() can recover within the deadline below;
            # a short one lets the watchdog alone recover.
            heartbeat = 5.0 if wire_reconnect else 0.5
            recorder = Recorder(50)
            pc = PullConsumer(
                nc,
                namespace,
                consumer,
                recorder,
                max_inflight=16,
                expires=4 * heartbeat,
                idle_heartbeat=heartbeat,
            )
            async with pulling(pc):
                await publish(js, f"{namespace}.a", 50)
                await asyncio.wait_for(recorder.done.wait(), DEADLINE)
                recorder.expect(100)

                server.kill()
                server.restart()
                await asyncio.wait_for(reconnected.wait(), DEADLINE)
                await asyncio.wait_for(publish_until_accepted(js, f"{namespace}.a", 50), DEADLINE)
                await asyncio.wait_for(recorder.done.wait(), 10.0)
            assert set(range(1, 101)) <= set(recorder.seen)
        finally:
            await nc.close()
