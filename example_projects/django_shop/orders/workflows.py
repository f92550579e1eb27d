"""The order workflow: charge, ship, record the outcome; and the nightly report, a parent that
runs a child workflow per order status. Found by autodiscovery; the report's schedule is in
``settings.DFCORE["SCHEDULES"]``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from dfcore import RetryPolicy
from dfcore.integrations.django import app

from .models import Order


@app.activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.5), timeout=30)
def charge_card(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    if order.amount <= Decimal(0):
        raise ValueError(f"order {order_id} has nothing to charge")
    return f"ch_{uuid.uuid5(uuid.NAMESPACE_OID, f'charge-{order_id}').hex[:12]}"


@app.activity(timeout=30)
def ship(order_id: int, charge_id: str) -> str:
    Order.objects.filter(pk=order_id).update(status="shipping", charge_id=charge_id)
    return f"trk_{uuid.uuid5(uuid.NAMESPACE_OID, f'ship-{order_id}').hex[:12]}"


@app.activity
def mark_fulfilled(order_id: int, tracking_id: str) -> None:
    Order.objects.filter(pk=order_id).update(status="fulfilled", tracking_id=tracking_id)


@app.workflow
async def fulfil_order(ctx, order_id: int) -> dict:
    charge_id = await ctx.activity(charge_card, order_id)
    tracking_id = await ctx.activity(ship, order_id, charge_id)
    await ctx.activity(mark_fulfilled, order_id, tracking_id)
    return {"order_id": order_id, "charge_id": charge_id, "tracking_id": tracking_id}


@app.activity
def count_orders(status: str, day: str) -> int:
    """How many orders created on ``day`` (ISO date) are in ``status``."""
    return Order.objects.filter(status=status, created_at__date=day).count()


@app.workflow
async def orders_in_status(ctx, status: str, day: str) -> int:
    """The child: one count, in a history of its own."""
    return await ctx.activity(count_orders, status, day)


@app.workflow
async def nightly_report(ctx) -> dict:
    """The parent, started at 03:00 Berlin time by the schedule ``nightly-report``: yesterday's
    orders by status, one child workflow each, run in parallel."""
    day = (ctx.now() - timedelta(days=1)).date().isoformat()
    statuses = ("fulfilled", "failed")
    counts = await ctx.gather(*(ctx.child(orders_in_status, s, day) for s in statuses))
    return {"day": day, **dict(zip(statuses, counts, strict=True))}
