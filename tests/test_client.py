"""Client behaviours: shared connection, codecs, execution timeout, handles by id."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import decimal
import time
import uuid
from typing import Any

import nats
import pydantic
import pytest

from dfcore import App, ConfigurationError, PayloadCodec, WorkflowFailureError
from dfcore.client._loopthread import SYNC_LOOP, run_sync
from dfcore.jetstream._server import free_port

from .workerkit import WorkerThread


class Base64Reversed(PayloadCodec):
    """A stand-in for an encrypting codec: bytes on the wire are not the JSON."""

    def encode(self, data: bytes) -> bytes:
        return base64.b64encode(data[::-1])

    def decode(self, data: bytes) -> bytes:
        return base64.b64decode(data)[::-1]


def test_sync_calls_share_one_loop_and_connection(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def noop(ctx: Any) -> int:
        return 1

    with WorkerThread(app):
        for _ in range(3):
            assert noop.start().result(timeout=30) == 1
    assert list(app.client._loop_clients) == [SYNC_LOOP.loop]
    assert app.client._loop_clients[SYNC_LOOP.loop].nc is not None


async def test_a_custom_codec_transforms_every_stored_byte(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app(codec=Base64Reversed())

    @app.activity
    def secret() -> str:
        return "the-secret-value"

    @app.workflow
    async def wf(ctx: Any, word: str) -> str:
        return word + await ctx.activity(secret)

    with WorkerThread(app):
        handle = await wf.astart("plain-arg-")
        assert await handle.aresult(timeout=30) == "plain-arg-the-secret-value"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    info = await js.stream_info(f"DF_{namespace}_HISTORY")
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(f"DF_{namespace}_HISTORY", seq)
        except Exception:
            continue
        assert b"secret" not in msg.data and b"plain-arg" not in msg.data
    await nc.close()
    await app.aclose()


def test_execution_timeout_fails_the_workflow(make_app: Any) -> None:
    app = make_app()

    @app.workflow(execution_timeout=0.3)
    async def forever(ctx: Any) -> None:
        await ctx.wait_signal("never")

    with WorkerThread(app), pytest.raises(WorkflowFailureError) as info:
        forever.start().result(timeout=30)
    assert info.value.status == "timed_out"


def test_get_handle_by_id_and_result_after_completion(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def answer(ctx: Any) -> int:
        return 42

    with WorkerThread(app):
        answer.start(workflow_id="the-answer").result(timeout=30)
    handle = app.get_handle("the-answer")
    assert handle.result(timeout=5) == 42
    assert handle.status().status == "completed"
    assert handle.status().workflow_type == "answer"


def test_result_timeout_says_the_workflow_keeps_running(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def waits(ctx: Any) -> None:
        await ctx.wait_signal("go")

    with WorkerThread(app):
        handle = waits.start()
        with pytest.raises(TimeoutError, match="keeps running"):
            handle.result(timeout=0.2)
        handle.signal("go")
        assert handle.result(timeout=30) is None


async def test_async_worker_entry_point(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def hello(ctx: Any, name: str) -> str:
        return f"hello {name}"

    worker = asyncio.ensure_future(app.arun_worker())
    try:
        assert await (await hello.astart("ann")).aresult(timeout=30) == "hello ann"
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        await app.aclose()


def test_chained_records_spare_the_worker_a_history_read(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dfcore.jetstream._store import Store

    app = make_app()
    loads: list[str] = []
    real_load = Store.load

    async def counting_load(self: Store, subject: str, after_seq: int = 0) -> Any:
        loads.append(subject)
        return await real_load(self, subject, after_seq)

    monkeypatch.setattr(Store, "load", counting_load)

    @app.activity
    def one() -> int:
        return 1

    @app.workflow
    async def two_steps(ctx: Any) -> int:
        return await ctx.activity(one) + await ctx.activity(one)

    with WorkerThread(app):
        handle = two_steps.start()
        assert handle.result(timeout=30) == 2
    assert loads == []  # every record named the one before it: no read-back was needed

    async def records() -> Any:
        store = await app.client.store()
        _, subject = await handle._locate()
        return await store.load(subject)

    chain = run_sync(records())
    assert [r.body["prev"] for r in chain] == [0] + [r.seq for r in chain[:-1]]


def test_a_loop_per_call_does_not_leak_connections(make_app: Any) -> None:
    import os

    app = make_app()

    async def start_one(n: int) -> str:
        return (await app.astart("nothing_runs_it", n)).workflow_id

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    asyncio.run(start_one(0))  # warm-up: imports, the sync loop's thread
    before = open_fds()
    ids = [asyncio.run(start_one(n)) for n in range(1, 11)]
    assert len(set(ids)) == 10
    assert open_fds() <= before + 2  # not one socket per loop
    assert not [loop for loop in app.client._loop_clients if loop.is_closed()]


def test_a_short_lived_app_is_freed(nats_url: str, namespace: str) -> None:
    import gc
    import weakref

    app = App("freed", nats_url=nats_url, namespace=namespace)
    app.start("nothing_runs_it", 1)  # connects on the sync loop
    loop_clients = list(app.client._loop_clients.values())
    assert loop_clients
    freed, client = weakref.ref(app), app.client
    del app
    gc.collect()
    assert freed() is None

    def connections_closed() -> bool:
        return not client._loop_clients and all(
            c.nc is None or c.nc.is_closed for c in loop_clients
        )

    deadline = time.monotonic() + 10
    while not connections_closed() and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval; the deadline bounds the wait
    assert connections_closed()


@dataclasses.dataclass
class Address:
    city: str
    moved_in: datetime.date


class Receipt(pydantic.BaseModel):
    order_id: uuid.UUID
    total: decimal.Decimal


def test_typed_payloads_round_trip_through_workflows_and_activities(make_app: Any) -> None:
    app = make_app()

    @app.activity
    def bill(address: Address, order_id: uuid.UUID) -> Receipt:
        assert isinstance(address, Address) and isinstance(address.moved_in, datetime.date)
        return Receipt(order_id=order_id, total=decimal.Decimal("12.50"))

    @app.workflow
    async def checkout(
        ctx: Any, address: Address, order_id: uuid.UUID
    ) -> tuple[Receipt, datetime.datetime]:
        receipt = await ctx.activity(bill, address, order_id)
        assert isinstance(receipt, Receipt)
        return receipt, ctx.now()

    order_id = uuid.uuid4()
    with WorkerThread(app):
        receipt, when = checkout.start(Address("Oslo", datetime.date(2020, 1, 2)), order_id).result(
            timeout=30
        )
    assert receipt == Receipt(order_id=order_id, total=decimal.Decimal("12.50"))
    assert isinstance(when, datetime.datetime) and when.tzinfo is not None


def test_config_from_object_sets_the_namespace(nats_url: str) -> None:
    class Config:
        DF_NATS_URL = nats_url
        DF_NAMESPACE = "fromobject"
        UNRELATED = 1

    app = App("cfg")
    app.config_from_object(Config)
    assert app.settings.namespace == "fromobject" and app.settings.nats_url == nats_url
    with pytest.raises(ConfigurationError, match="DF_TASK_QUEUE"):
        app.config_from_object({"DF_TASK_QUEUE": "has space"})


def test_a_server_too_old_for_the_engine_is_refused_clearly(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nats.aio.client import ServerVersion

    from dfcore import DFError
    from dfcore.jetstream._streams import Streams

    real = Streams.check_server_version

    def as_if_old(self: Streams) -> None:
        old = property(lambda nc: ServerVersion("2.9.10"))
        monkeypatch.setattr(type(self.api.nc), "connected_server_version", old)
        real(self)

    monkeypatch.setattr(Streams, "check_server_version", as_if_old)
    app = make_app()
    with pytest.raises(
        DFError, match=r"is version 2\.9\.10, but DurableFuture needs nats-server 2\.12"
    ):
        app.start("anything")


def test_a_server_list_with_a_dead_server_still_connects(nats_url: str, namespace: str) -> None:
    # As with a cluster whose first node is down: every URL of the list is tried.
    dead = f"nats://127.0.0.1:{free_port()}"
    for urls in (f"{dead},{nats_url}", f"{nats_url},{dead}"):
        app = App("list", nats_url=urls, namespace=namespace)
        try:
            assert app.list_workflows() == []
        finally:
            app.close()
