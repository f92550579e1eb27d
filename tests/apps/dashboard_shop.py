"""The shop the dashboard tests drive: an order whose shipping fails once and is retried, an
order that waits for an approval signal, a long wait to cancel, and a parent with a child.

Processes import ``tests.apps.dashboard_shop:app``; it reads DF_NATS_URL and DF_NAMESPACE.
"""

from __future__ import annotations

import uuid
from typing import Any

from dfcore import App, RetryPolicy

app = App("shop")
_attempts: dict[str, int] = {}


@app.activity(timeout=10)
def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]:
    return {"charge_id": f"ch_{uuid.uuid4().hex[:8]}", "customer": customer_id, "amount": amount}


@app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.5))
def ship_package(charge: dict[str, Any], quantity: int) -> dict[str, Any]:
    seen = _attempts[charge["charge_id"]] = _attempts.get(charge["charge_id"], 0) + 1
    if seen == 1:
        raise ConnectionError("the carrier's API timed out")  # the retry shows on the timeline
    return {"tracking_id": f"tr_{uuid.uuid4().hex[:8]}", "quantity": quantity}


@app.workflow
async def order(ctx: Any, customer_id: str, amount: float, quantity: int = 1) -> dict[str, Any]:
    """Charge the card, then ship (the first shipping attempt fails)."""
    charge = await ctx.activity(charge_credit_card, customer_id, amount)
    shipped = await ctx.activity(ship_package, charge, quantity)
    return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}


@app.workflow
async def approval(ctx: Any, customer_id: str, note: dict[str, Any] | None = None) -> str:
    """Wait for the approve signal, then answer who approved."""
    approved = await ctx.wait_signal("approve")
    return f"{customer_id} approved by {approved['by']}"


@app.workflow
async def long_wait(ctx: Any, hours: float) -> str:
    await ctx.sleep(hours * 3600)
    return "woke up"


@app.workflow
async def invoice(ctx: Any, order_id: str) -> str:
    return f"invoice for {order_id}"


@app.workflow
async def parent(ctx: Any, order_id: str) -> str:
    return await ctx.child(invoice, order_id, workflow_id=f"{order_id}-invoice")
