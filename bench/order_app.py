"""The benchmark's app: the order workflow (2 activities) and a long N-step workflow."""

from __future__ import annotations

import os
from typing import Any

from dfcore import App

app = App("bench")

if os.environ.get("DF_BENCH_OBSERVE"):  # bench/burst.py --observe: tracing and metrics on
    from bench.observed import observe

    observe(app, os.environ["DF_BENCH_OBSERVE"])


@app.activity
def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]:
    return {"charge_id": f"ch_{customer_id}", "amount": amount}


@app.activity
async def ship_package(charge: dict[str, Any], quantity: int) -> dict[str, Any]:
    return {"tracking_id": "tr_" + charge["charge_id"][3:], "quantity": quantity}


@app.workflow
async def order(
    ctx: Any, customer_id: str, product_id: str, amount: float, quantity: int
) -> dict[str, Any]:
    charge = await ctx.activity(charge_credit_card, customer_id, amount)
    shipped = await ctx.activity(ship_package, charge, quantity)
    return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}


@app.activity
async def step(n: int) -> int:
    return n


@app.workflow
async def long_steps(ctx: Any, steps: int) -> int:
    total = 0
    for n in range(steps):
        total += await ctx.activity(step, n)
    return total
