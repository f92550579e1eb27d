"""A busy workflow accepts every fact sent to it (issue: signals refused under concurrency)."""

from __future__ import annotations

import asyncio
from typing import Any

from .workerkit import WorkerThread


async def test_a_thousand_signals_with_a_hundred_in_flight_are_all_counted_once(
    make_app: Any,
) -> None:
    app = make_app()

    @app.workflow
    async def tally(ctx: Any, n: int) -> list[int]:
        return sorted([await ctx.wait_signal("add") for _ in range(n)])

    with WorkerThread(app):
        handle = await tally.astart(1000)
        gate = asyncio.Semaphore(100)

        async def send(i: int) -> None:
            async with gate:
                await handle.asignal("add", i)

        # Every send returns normally: none is refused because others keep the history moving.
        await asyncio.gather(*(send(i) for i in range(1000)))
        assert await handle.aresult(timeout=120) == list(range(1000))
