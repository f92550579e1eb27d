"""The workflows of ``bench/dashboard.py``: one that ends at once, one that waits for a signal.

Worker and dashboard processes import ``bench.dashboard_app:app``; it reads DF_NATS_URL and
DF_NAMESPACE from the environment.
"""

from __future__ import annotations

from typing import Any

from dfcore import App

app = App("bench")


@app.workflow
async def noop(ctx: Any, n: int) -> int:
    return n


@app.workflow
async def waits(ctx: Any) -> str:
    return str(await ctx.wait_signal("go"))
