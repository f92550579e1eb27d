"""The design's invariants under concurrency, server restarts and foreign input."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from dfcore import App, EmbeddedServer
from dfcore import _history as h
from dfcore._loopthread import run_sync

from .workerkit import WorkerThread, wait_until


@pytest.fixture
def make_app(nats_url: str, namespace: str) -> Iterator[Any]:
    """A factory for Apps on this test's namespace (their sync connections closed after)."""
    apps: list[App] = []

    def make(url: str = nats_url, **settings: Any) -> App:
        app = App("inv", nats_url=url, namespace=namespace, **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        run_sync(app._close_sync_client())


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
        for i, data in enumerate(garbage):
            await js.publish(f"{namespace}.history.default.foreign-{i}", data)
            await js.publish(f"{namespace}.task.default", data)
        await js.publish(f"{namespace}.history.default.foreign-x", b'{"t": "ActivityCompleted"}')
        handles = [await app.astart("three", n) for n in range(5)]
        assert [await hd.aresult(timeout=30) for hd in handles] == [2, 4, 6, 8, 10]
        await nc.close()
    await app.aclose()
