"""Workflows that continue as new, for the continue-as-new tests, run by real worker processes.

``DF_TEST_DIE_WHILE_CONTINUING=1`` makes the worker process kill itself (SIGKILL) after it kept
a run's records and before it appended the next run's start: the crash the tests need, at the
one moment where a run is copied and not yet continued.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from dfcore import App
from tests.apps.orders import record

app = App("loops")


@app.activity
def increment(count: int) -> int:
    record("increment", str(count))
    return count + 1


@app.workflow
async def counter(ctx: Any, count: int, stop: int, per_run: int) -> dict[str, int]:
    """Counts to ``stop`` with one activity per step, ``per_run`` steps a run."""
    for _ in range(per_run):
        if count >= stop:
            return {"count": count, "run": ctx.info.run}
        count = await ctx.activity(increment, count)
    ctx.continue_as_new(count, stop, per_run)


@app.workflow
async def collector(ctx: Any, items: list[int], want: int, per_run: int) -> list[int]:
    """Collects ``want`` signals, ``per_run`` a run: none may be lost while it continues."""
    for _ in range(per_run):
        if len(items) >= want:
            return items
        items = [*items, await ctx.wait_signal("item")]
    if len(items) >= want:
        return items
    ctx.continue_as_new(items, want, per_run)


@app.workflow
def sync_counter(ctx: Any, count: int, stop: int) -> int:
    """A plain ``def`` workflow: one step a run."""
    if count >= stop:
        return count
    ctx.continue_as_new(ctx.activity(increment, count), stop)


@app.workflow
async def invoice(ctx: Any, month: int) -> str:
    return f"invoice-{month}"


@app.workflow
async def billing(ctx: Any, month: int, last: int) -> list[str]:
    """A parent that runs one child a run: each run's child gets its own id."""
    billed = await ctx.child(invoice, month)
    if month >= last:
        return [billed, ctx.info.workflow_id]
    ctx.continue_as_new(month + 1, last)


@app.workflow
async def counts_in_a_child(ctx: Any) -> dict[str, int]:
    """A parent whose child continues as new: the child's last run reports to it."""
    return dict(await ctx.child(counter, 0, 3, 1))


if os.environ.get("DF_TEST_DIE_WHILE_CONTINUING"):
    import dfcore.worker._continue as _continue

    def _die(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    _continue._next_run_id = _die
