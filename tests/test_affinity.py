"""Affinity: each workflow partition is served by one worker process (docs/architecture.md).

Worker threads stand in for processes here (each has its own connection and event loop); the
fault suite (tests/faults) kills and freezes real processes.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import pytest

from dfcore.jetstream._naming import PARTITIONS
from dfcore.jetstream._store import Store
from dfcore.worker._partitions import assign

from .workerkit import WorkerThread, wait_until


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 12, 13])
def test_the_assignment_gives_every_member_a_balanced_share(count: int) -> None:
    members = [f"worker-{i}" for i in range(count)]
    owners = assign(members)
    assert sorted(owners) == list(range(PARTITIONS))  # every partition has one owner
    load = collections.Counter(owners.values())
    shares = [load.get(m, 0) for m in members]
    assert max(shares) - min(shares) <= 1
    # Every process computes it from the member set alone, in whatever order it heard them.
    assert assign(list(reversed(members))) == owners


def test_a_member_joining_or_leaving_moves_few_partitions() -> None:
    before = assign(["a", "b", "c"])
    after_join = assign(["a", "b", "c", "d"])
    moved = sum(before[p] != after_join[p] for p in range(PARTITIONS))
    assert moved <= PARTITIONS // 2  # d takes 3; a balanced reshuffle moves few more
    after_leave = assign(["a", "b"])
    kept = [p for p in range(PARTITIONS) if before[p] in ("a", "b")]
    assert sum(after_leave[p] == before[p] for p in kept) >= len(kept) - 2


def held(*threads: WorkerThread) -> list[list[int]]:
    return [t.worker._partitions[0].held for t in threads]  # type: ignore[union-attr]


def test_two_workers_split_the_partitions_and_keep_each_workflow_cached(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()

    @app.activity
    async def step(n: int) -> int:
        return n + 1

    @app.workflow
    async def chain(ctx: Any, n: int) -> int:
        for _ in range(5):
            n = await ctx.activity(step, n)
        return n

    reads = collections.Counter[str]()
    read_recent = Store.read_recent

    async def counted(self: Store, subject: str, after_seq: int) -> Any:
        reads[subject] += 1
        return await read_recent(self, subject, after_seq)

    with WorkerThread(app) as one, WorkerThread(app) as two:

        def split() -> bool:
            a, b = held(one, two)
            return len(a) == len(b) == PARTITIONS // 2 and sorted(a + b) == list(range(PARTITIONS))

        wait_until(split, what=f"the partitions split between two workers ({held(one, two)})")
        monkeypatch.setattr(Store, "read_recent", counted)
        handles = [chain.start(n) for n in range(60)]
        assert [hd.result(timeout=60) for hd in handles] == [n + 5 for n in range(60)]
    # Each step reached the worker that had the workflow cached: no history was read back.
    assert not reads, f"{sum(reads.values())} cache misses: {sorted(reads)[:5]}"


def test_a_worker_that_stops_hands_its_partitions_over_at_once(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def wait_for_go(ctx: Any) -> str:
        return str(await ctx.wait_signal("go"))

    stays = WorkerThread(app).start()
    try:
        with WorkerThread(app) as leaves:
            wait_until(lambda: all(len(h) == 6 for h in held(stays, leaves)), what="a split")
            gone = held(leaves)[0]
            handles = [wait_for_go.start(workflow_id=f"w-{i}") for i in range(24)]
            wait_until(lambda: all(h.status().status == "running" for h in handles), what="runs")
        # Stopped gracefully: it said it was leaving and released its pins, so the one that
        # stays serves every partition, and the signals reach workflows it never ran.
        wait_until(lambda: held(stays)[0] == list(range(PARTITIONS)), what="the handover")
        assert set(gone) <= set(held(stays)[0])
        for i, handle in enumerate(handles):
            handle.signal("go", i)
        assert [hd.result(timeout=30) for hd in handles] == [str(i) for i in range(24)]
    finally:
        stays.stop()


def test_more_workers_than_partitions_leave_the_extras_standing_by(make_app: Any) -> None:
    app = make_app(task_queue="crowd")

    @app.workflow
    async def hello(ctx: Any, n: int) -> int:
        return n

    threads = [WorkerThread(app).start() for _ in range(PARTITIONS + 1)]
    try:
        wait_until(
            lambda: sorted(itertools.chain(*held(*threads))) == list(range(PARTITIONS)),
            what="every partition held once",
        )
        assert sorted(len(h) for h in held(*threads)) == [0] + [1] * PARTITIONS
        handles = [hello.start(n) for n in range(30)]
        assert [hd.result(timeout=30) for hd in handles] == list(range(30))
    finally:
        for thread in threads:
            thread.stop()
