"""The order workflow: charge, ship, record the outcome. Found by autodiscovery."""

from __future__ import annotations

import uuid
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
