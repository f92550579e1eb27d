"""What a workflow costs the broker: each piece of work is published once.

Every publish is seen by a plain NATS subscriber, including those JetStream deduplicates, so a
repeated publish shows here even when the stream keeps one copy.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import nats

from dfcore.jetstream._naming import PARTITIONS, Layout

from .workerkit import WorkerThread


async def settled(nc: Any, lay: Layout, queue: str, timeout: float = 30.0) -> None:
    """Wait until every workflow consumer of ``queue`` has delivered and had acked everything."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        infos = [
            await js.consumer_info(lay.history_stream, lay.workflow_consumer(queue, p))
            for p in range(PARTITIONS)
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the workflow consumers of {queue} did not settle within {timeout} s")


async def test_a_finished_workflow_records_its_outcome_once_and_purges_nothing(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()

    @app.activity
    def add(a: int, b: int) -> int:
        return a + b

    @app.workflow
    async def total(ctx: Any, n: int) -> int:
        return await ctx.activity(add, await ctx.activity(add, n, 1), 2)

    lay = Layout(namespace)
    nc = await nats.connect(nats_url)
    seen = collections.Counter[str]()

    async def count(msg: Any) -> None:
        seen[msg.subject.split(".")[1] if msg.subject.startswith(namespace) else "purge"] += 1

    try:
        await nc.subscribe(lay.status_all, cb=count)
        await nc.subscribe(f"$JS.API.STREAM.PURGE.{lay.history_stream}", cb=count)
        with WorkerThread(app):
            handles = [await total.astart(n) for n in range(10)]
            assert [await hd.aresult(timeout=60) for hd in handles] == [n + 3 for n in range(10)]
            # The final decision comes back to the worker like every record; wait until it
            # has been handled, then count.
            await settled(nc, lay, "default")
            await nc.flush()
    finally:
        await nc.close()
    # One outcome per workflow, and no timer purge for workflows that never started a timer.
    assert seen == {"status": 10}
