"""The workflow index (one entry per workflow, for listings that scale), worker descriptions and
queue figures: what the dashboard and ``list_workflows`` are built on."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson

from dfcore import App, ApplicationError, WorkflowSummary
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._index import INDEXED

from .workerkit import WorkerThread, wait_until


def entry_of(app: App, workflow_id: str, queue: str = "default") -> WorkflowSummary | None:
    async def read() -> WorkflowSummary | None:
        return await (await app.client.store()).index.current(queue, workflow_id)

    return run_sync(read())


def raw_headers(app: App, workflow_id: str, queue: str = "default") -> dict[str, str]:
    async def read() -> dict[str, str]:
        store = await app.client.store()
        subject = store.layout.index_subject(queue, workflow_id)
        msg = await store.api.get_one({"last_by_subj": subject}, subject)
        assert msg is not None
        return dict(msg.headers or {})

    return run_sync(read())


def test_a_start_is_listed_at_once_and_its_end_replaces_it(make_app: Any) -> None:
    app = make_app()

    @app.activity
    def double(n: int) -> int:
        return 2 * n

    @app.workflow
    async def twice(ctx: Any, n: int) -> int:
        return await ctx.activity(double, n)

    twice.start(21, workflow_id="tw-1")  # no worker yet: it waits, and is listed
    entry = entry_of(app, "tw-1")
    assert entry is not None
    assert (entry.status, entry.workflow_type, entry.task_queue) == ("running", "twice", "default")
    assert entry.started_at is not None and entry.ended_at is None
    assert [w.workflow_id for w in app.list_workflows()] == ["tw-1"]
    with WorkerThread(app):
        assert app.get_handle("tw-1").result(timeout=30) == 42
        ended = wait_until(lambda: (e := entry_of(app, "tw-1")) and e.ended and e, what="the end")
    assert (ended.status, ended.workflow_type, ended.run) == ("completed", "twice", 1)
    # The start time is the client's at first, then the server's stamp of the start record.
    assert ended.started_at is not None and ended.ended_at is not None
    assert ended.ended_at >= ended.started_at and ended.seq > entry.seq
    # Starting the id again starts nothing, and leaves the entry alone.
    twice.start(21, workflow_id="tw-1")
    assert entry_of(app, "tw-1") == ended


def test_a_failure_a_recovery_a_child_and_a_next_run_are_indexed(make_app: Any) -> None:
    app = make_app()
    fixed = False
    release = threading.Event()

    @app.activity
    def fetch(n: int) -> dict[str, int]:
        return {"n": n}

    @app.activity
    def wait_for_release() -> None:
        assert release.wait(30)

    @app.workflow
    async def buggy(ctx: Any) -> int:
        data = await ctx.activity(fetch, 1)
        if not fixed:
            raise KeyError("count")  # a bug in the code
        await ctx.activity(wait_for_release)
        return data["n"]

    @app.workflow
    async def leaf(ctx: Any, n: int) -> int:
        return n

    @app.workflow
    async def parent(ctx: Any) -> int:
        return await ctx.child(leaf, 5, workflow_id="leaf-1")

    @app.workflow
    async def again(ctx: Any, n: int) -> int:
        if n < 3:
            ctx.continue_as_new(n + 1)
        return n

    with WorkerThread(app):
        stuck = buggy.start(workflow_id="buggy-1")
        failing = wait_until(
            lambda: (e := entry_of(app, "buggy-1")) and e.status == "failing" and e,
            what="the entry to say failing",
        )
        assert failing.failure is not None and "KeyError" in failing.failure
        fixed = True  # the next retry gets past the bug and waits in an activity
        wait_until(
            lambda: (e := entry_of(app, "buggy-1")) and e.status == "running",
            what="the entry to say running again",
        )
        assert entry_of(app, "buggy-1").failure is None  # type: ignore[union-attr]
        release.set()
        assert stuck.result(timeout=30) == 1

        assert parent.start(workflow_id="parent-1").result(timeout=30) == 5
        assert again.start(1, workflow_id="again-1").result(timeout=30) == 3
        child = wait_until(lambda: (e := entry_of(app, "leaf-1")) and e.ended and e, what="leaf")
        assert (child.status, child.parent_id, child.workflow_type) == (
            "completed",
            "parent-1",
            "leaf",
        )
        runs = wait_until(lambda: (e := entry_of(app, "again-1")) and e.ended and e, what="again")
        assert (runs.status, runs.run) == ("completed", 3)
        first = entry_of(app, "parent-1")
        assert first is not None and first.parent_id is None


def test_an_ended_entry_expires_with_the_history(make_app: Any) -> None:
    app = make_app(history_retention=3600)

    @app.workflow
    async def fails(ctx: Any) -> None:
        raise ApplicationError("no stock", type="OutOfStock")

    with WorkerThread(app):
        handle = fails.start(workflow_id="fails-1")
        wait_until(lambda: handle.status().status == "failed", what="the failure")
        entry = wait_until(lambda: (e := entry_of(app, "fails-1")) and e.ended and e, what="end")
    assert entry.status == "failed" and entry.failure == "OutOfStock: no stock"
    headers = raw_headers(app, "fails-1")
    assert headers["Nats-TTL"] == "3600s" and headers["Df-Status"] == "failed"
    assert headers["Df-Event"] == INDEXED


def test_listing_reads_the_newest_entries_and_checks_them_against_histories(
    make_app: Any,
) -> None:
    app = make_app()

    @app.workflow
    async def noop(ctx: Any, n: int) -> int:
        return n

    for n in range(6):
        noop.start(n, workflow_id=f"n-{n}")

    async def forge() -> None:  # an entry with no workflow behind it
        store = await app.client.store()
        subject = store.layout.index_subject("default", "ghost")
        body = orjson.dumps({"t": INDEXED, "wf": "noop", "st": "completed"})
        await store.nc.publish(subject, body, headers={"Df-Status": "completed"})
        await store.nc.flush()

    run_sync(forge())
    wait_until(lambda: entry_of(app, "ghost"), what="the forged entry to be stored")
    listed = app.list_workflows(limit=3)
    assert [w.workflow_id for w in listed] == ["n-5", "n-4", "n-3"]  # the ghost has no history
    assert {(w.workflow_type, w.status) for w in listed} == {("noop", "running")}
    assert [w.workflow_id for w in app.list_workflows(limit=100)] == [
        f"n-{n}" for n in range(5, -1, -1)
    ]


async def test_a_watch_delivers_every_entry_then_each_change(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def noop(ctx: Any, n: int) -> int:
        return n

    for n in range(3):
        await noop.astart(n, workflow_id=f"w-{n}")
    watch = await app.awatch_workflows()
    try:
        await asyncio.wait_for(watch.caught_up(), 10)
        seen = [await asyncio.wait_for(anext(watch), 10) for _ in range(3)]
        assert [e.workflow_id for e in seen] == ["w-0", "w-1", "w-2"]
        assert watch.pending() == 0
        with WorkerThread(app):
            await noop.astart(7, workflow_id="w-new")
            changes: dict[str, list[str]] = {}
            while changes.get("w-new", [])[-1:] != ["completed"] or len(changes) < 4:
                change = await asyncio.wait_for(anext(watch), 30)
                changes.setdefault(change.workflow_id, []).append(change.status)
        assert changes["w-new"] == ["running", "completed"]
        assert all(statuses[-1] == "completed" for statuses in changes.values())
    finally:
        await watch.close()


async def test_an_empty_namespace_is_caught_up_at_once(make_app: Any) -> None:
    app = make_app()
    await app.aqueues()  # makes the streams
    watch = await app.awatch_workflows()
    try:
        await asyncio.wait_for(watch.caught_up(), 10)
        assert watch.is_caught_up and watch.pending() == 0
    finally:
        await watch.close()


def test_workers_say_what_they_run_and_queues_what_waits(make_app: Any) -> None:
    app = make_app()
    started, release = threading.Event(), threading.Event()

    @app.activity
    def slow() -> str:
        started.set()
        assert release.wait(30)
        return "done"

    @app.workflow
    async def job(ctx: Any) -> str:
        return await ctx.activity(slow)

    with WorkerThread(app, task_queues=["default", "gpu"]) as worker:
        handle = job.start(workflow_id="job-1")
        assert started.wait(30)
        workers = wait_until(lambda: app.workers(window=0.3), what="a worker to answer")
        assert len(workers) == 1
        me = workers[0]
        assert (me.app, me.workflow_queues, me.activity_queues) == (
            "test",
            ("default", "gpu"),
            ("default", "gpu"),
        )
        assert me.running_count == 1 and me.id == worker.worker.id
        (running,) = me.running
        assert (running.workflow_id, running.activity, running.attempt) == ("job-1", "slow", 1)
        queues = {q.name: q for q in app.queues()}
        assert set(queues) == {"default", "gpu"}
        assert queues["default"].activity_in_flight == 1
        release.set()
        assert handle.result(timeout=30) == "done"
    assert app.workers(window=0.3) == []  # a stopped worker answers no more
    for n in range(2):
        job.start(workflow_id=f"later-{n}")
    default = wait_until(
        lambda: [q for q in app.queues() if q.name == "default" and q.workflow_backlog == 2],
        what="the starts to wait on the queue",
    )
    assert default[0].activity_in_flight == 0


async def test_a_history_watch_gives_the_history_then_each_new_batch(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def waits(ctx: Any) -> str:
        return str(await ctx.wait_signal("go"))

    handle = await waits.astart(workflow_id="waits-1")
    history = handle.awatch_history()
    try:
        first = await asyncio.wait_for(anext(history), 10)
        assert [(e.index, e.type) for e in first] == [(1, "WorkflowStarted")]
        with WorkerThread(app):
            seen = list(first)
            await handle.asignal("go", "now")
            while seen[-1].type != "WorkflowCompleted":
                batch = await asyncio.wait_for(anext(history), 30)
                assert batch[0].index == seen[-1].index + 1  # indexes go on
                seen += batch
        types = [e.type for e in seen]
        assert "SignalReceived" in types and types == [e.type for e in await handle.ahistory()]
    finally:
        await history.aclose()
