"""The design's invariants under concurrency, server restarts and foreign input."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import nats
import pytest

from dfcore import App, EmbeddedServer
from dfcore.client._loopthread import run_sync
from dfcore.core import _history as h
from dfcore.jetstream._naming import Layout

from .workerkit import WorkerThread, wait_until


def define(app: App) -> None:
    @app.activity
    async def step(n: int) -> int:
        return n

    @app.workflow
    async def three(ctx: Any, n: int) -> int:
        a, b = await asyncio.gather(ctx.activity(step, n), ctx.activity(step, n + 1))
        return a + b + await ctx.activity(step, 1)


def test_two_workers_racing_keep_histories_consistent(make_app: Any) -> None:
    apps = [make_app(workflow_cache_size=0), make_app(workflow_cache_size=0)]
    for app in apps:
        define(app)  # no cache: every task replays, so the two workers really interleave
    with WorkerThread(apps[0]), WorkerThread(apps[1]):
        handles = [apps[0].start("three", n) for n in range(40)]
        assert [hd.result(timeout=60) for hd in handles] == [2 * n + 2 for n in range(40)]
    for handle in handles:
        events = handle.history()
        scheduled = collections.Counter(
            (e.attributes["seq"], e.attributes["attempt"])
            for e in events
            if e.type == h.ACTIVITY_SCHEDULED
        )
        assert set(scheduled.values()) == {1}, scheduled  # no decision was made twice
        assert [e.type for e in events].count(h.WORKFLOW_COMPLETED) == 1


def test_durable_timer_survives_a_server_restart(tmp_path: Path, make_app: Any) -> None:
    with EmbeddedServer(tmp_path / "nats") as server:
        app = make_app(server.url)

        @app.workflow
        async def nap(ctx: Any) -> str:
            await ctx.sleep(1.0)
            return "rested"

        with WorkerThread(app):
            handle = nap.start()
            wait_until(
                lambda: any(e.type == h.TIMER_STARTED for e in handle.history()),
                what="the timer to be recorded",
            )
            server.kill()  # SIGKILL: nothing is flushed politely
            server.restart()
            assert handle.result(timeout=60) == "rested"
        assert [e.type for e in handle.history()].count(h.TIMER_FIRED) == 1


async def test_malformed_foreign_messages_do_not_harm_other_workflows(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    define(app)
    with WorkerThread(app):
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        garbage = [b"", b"\xff\xfe", b"{not json", b"[]", b'{"t": "Nope"}', b'{"t": "Decided"}']
        lay = Layout(namespace)
        for i, data in enumerate(garbage):
            await js.publish(lay.history_subject("default", f"foreign-{i}"), data)
            await js.publish(f"{namespace}.task.default", data)
        foreign = lay.history_subject("default", "foreign-x")
        await js.publish(foreign, b'{"t": "ActivityCompleted"}')
        handles = [await app.astart("three", n) for n in range(5)]
        assert [await hd.aresult(timeout=30) for hd in handles] == [2, 4, 6, 8, 10]
        await nc.close()
    await app.aclose()


def test_facts_after_the_end_do_not_reopen_a_workflow(make_app: Any) -> None:
    app = make_app()

    @app.activity
    async def quick() -> int:
        return 7

    @app.workflow(execution_timeout=30)
    async def short(ctx: Any) -> int:
        return await asyncio.wait_for(ctx.activity(quick), 20)  # leaves two timers pending

    with WorkerThread(app):
        handle = short.start()
        assert handle.result(timeout=30) == 7

    async def late_signal_and_timers() -> Any:
        store = await app.client.store()
        _, subject = await handle._locate()
        last = await store.last_seq(subject)  # a fact that arrives after the end
        await store.append_fact(
            subject, {"t": h.SIGNAL_RECEIVED, "ts": 0, "name": "late"}, msg_id=None, after_seq=last
        )
        info = await store.js.stream_info(
            store.layout.history_stream, subjects_filter=store.layout.timers_all
        )
        return info.state.subjects or {}

    pending = run_sync(late_signal_and_timers())
    assert pending == {}  # the unfired timers were purged when the workflow ended
    assert handle.status().status == "completed"
    assert handle.result(timeout=5) == 7
    assert [w.status for w in app.list_workflows()] == ["completed"]


def test_start_arguments_of_the_wrong_type_fail_the_workflow(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def typed(ctx: Any, n: int) -> int:
        return n

    with WorkerThread(app), pytest.raises(Exception) as info:
        app.start("typed", "seven").result(timeout=30)
    assert getattr(info.value, "cause_type", None) == "SerializationError"


def test_a_decision_larger_than_max_payload_is_split(make_app: Any) -> None:
    app = make_app()

    @app.activity
    def size(blob: str) -> int:
        return len(blob)

    @app.workflow
    async def fan_out(ctx: Any) -> list[int]:
        blobs = ["x" * 300_000] * 4  # each fits; together they exceed 1 MB
        return await ctx.gather(*(ctx.activity(size, b) for b in blobs))

    with WorkerThread(app):
        handle = fan_out.start()
        assert handle.result(timeout=60) == [300_000] * 4

    async def decisions() -> Any:
        store = await app.client.store()
        _, subject = await handle._locate()
        return [r.body for r in await store.load(subject) if r.type == h.DECIDED]

    first = run_sync(decisions())[0]
    assert first.get("more") is True


def test_sync_workflows_in_a_small_cache_leave_no_threads(make_app: Any) -> None:
    import threading

    app = make_app(workflow_cache_size=2)

    @app.activity
    async def bump(n: int) -> int:
        return n + 1

    @app.workflow
    def chain(ctx: Any, n: int) -> int:
        for _ in range(3):
            n = ctx.activity(bump, n)
        return n

    with WorkerThread(app):
        handles = [chain.start(n) for n in range(30)]
        assert [hd.result(timeout=60) for hd in handles] == [n + 3 for n in range(30)]

    def parked() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("df-wf-")]

    wait_until(lambda: not parked(), what="workflow threads to exit")
