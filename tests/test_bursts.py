"""Bursts larger than the workflow cache (docs/architecture.md, "Bursts")."""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import nats

from dfcore import App
from dfcore.core import _history as h
from dfcore.jetstream._naming import PARTITIONS, Layout

from .workerkit import WorkerThread, wait_until


def define(app: App) -> Any:
    @app.activity
    async def charge(n: int) -> int:
        await asyncio.sleep(0.02)  # work that keeps the workflow running (and cached) a while
        return n

    @app.activity
    def ship(n: int) -> int:
        return n + 1

    @app.workflow
    async def order(ctx: Any, n: int) -> int:
        return await ctx.activity(ship, await ctx.activity(charge, n))

    return order


def test_a_burst_larger_than_the_cache_completes_without_overfilling_it(make_app: Any) -> None:
    app = make_app(workflow_cache_size=5)
    order = define(app)
    peak = 0
    done = threading.Event()
    with WorkerThread(app) as worker:
        processor = worker.worker._processors[0]

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, processor.live)
                done.wait(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        handles = [order.start(n) for n in range(60)]
        try:
            assert [hd.result(timeout=90) for hd in handles] == [n + 1 for n in range(60)]
        finally:
            done.set()
            watcher.join()
    assert 0 < peak <= 5
    for handle in handles:
        events = handle.history()
        kinds = collections.Counter(e.type for e in events)
        assert kinds[h.WORKFLOW_STARTED] == 1 and kinds[h.WORKFLOW_COMPLETED] == 1
        scheduled = [
            (e.attributes["seq"], e.attributes["attempt"])
            for e in events
            if e.type == h.ACTIVITY_SCHEDULED
        ]
        assert len(scheduled) == len(set(scheduled)) == 2  # no decision made twice


async def test_starts_wait_on_the_admission_queue_and_are_taken_on_with_room(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app(workflow_cache_size=2)
    order = define(app)
    with WorkerThread(app):
        handles = [await order.astart(n) for n in range(20)]
        assert [await hd.aresult(timeout=60) for hd in handles] == [n + 1 for n in range(20)]
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        lay = Layout(namespace)
        infos = [
            await js.consumer_info(lay.tasks_stream, lay.admit_consumer("default", p))
            for p in range(PARTITIONS)
        ]
    finally:
        await nc.close()
    # Some starts were deferred and taken on from there, and none is left behind.
    assert sum(info.delivered.consumer_seq for info in infos) > 0
    assert all(info.num_pending == 0 and info.num_ack_pending == 0 for info in infos)


async def test_a_malformed_admission_message_is_dead_lettered(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app(workflow_cache_size=2)
    order = define(app)
    with WorkerThread(app):
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            admit = Layout(namespace).admit_subject("default", 0)
            await js.publish(admit, b"{not json")
            await js.publish(admit, b'{"h": "elsewhere", "seq": 1}')
        finally:
            await nc.close()

        def letters() -> list[Any]:
            return [d for d in app.dead_letters() if d.source == "admit"]

        wait_until(lambda: len(letters()) == 2, what="two dead letters from the admission queue")
        handle = await order.astart(1)
        assert await handle.aresult(timeout=30) == 2


def test_only_a_start_the_server_checked_as_first_counts_as_opening_its_history() -> None:
    from dfcore.jetstream._store import Store

    store = Store.__new__(Store)  # is_first_record reads the layout only
    store.layout = Layout("ns")
    subject = store.layout.history_subject("default", "order-1")
    expected = "Nats-Expected-Last-Subject-Sequence"
    assert store.is_first_record({expected: "0"}, subject)
    assert store.is_first_record(
        {expected: "0", f"{expected}-Subject": store.layout.history_any_queue("order-1")}, subject
    )
    # Checked against another, empty subject: the server's check proves nothing about this one.
    assert not store.is_first_record(
        {expected: "0", f"{expected}-Subject": store.layout.history_subject("default", "other")},
        subject,
    )
    assert not store.is_first_record({expected: "7"}, subject)
    assert not store.is_first_record(None, subject)


def test_two_small_caches_take_a_burst_of_sleeping_workflows(make_app: Any) -> None:
    # Each timer may fire on either worker, so each leaves cached copies the other serves on:
    # room must come back as those go idle, or deferred starts would wait for ever.
    apps = [make_app(workflow_cache_size=5, workflow_ack_wait=2) for _ in range(2)]
    for app in apps:

        @app.workflow(name="nap")
        async def nap(ctx: Any, n: int) -> int:
            await ctx.sleep(0.3)
            await ctx.sleep(0.3)
            return n

    with WorkerThread(apps[0]), WorkerThread(apps[1]):
        handles = [apps[0].start("nap", n) for n in range(40)]
        assert [hd.result(timeout=90) for hd in handles] == list(range(40))
