"""The order workflow: charge, ship, record the outcome; and the nightly report, a parent on a
schedule (``@df.schedule``) that runs a child workflow per order status.

Activities run inside the Flask app's context (``app.app_context()``), so they use
``db.session`` as views do; each commits its own change. Ids derive from the order id
(``uuid5``), so an activity retried after a crash returns the same id again.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dfcore import RetryPolicy, WorkflowContext
from dfcore.integrations.flask import DurableFuture

from .models import Order, db

df = DurableFuture()


def _stable_id(prefix: str, kind: str, order_id: int) -> str:
    return f"{prefix}_{uuid.uuid5(uuid.NAMESPACE_OID, f'{kind}-{order_id}').hex[:12]}"


@df.activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.5), timeout=30)
def charge_card(order_id: int) -> str:
    """Charge the order's amount; an amount of 0 fails, so the engine retries, then gives up."""
    order = db.session.get_one(Order, order_id)
    if order.amount_cents <= 0:
        raise ValueError(f"order {order_id} has nothing to charge")
    charge_id = _stable_id("ch", "charge", order_id)
    order.status, order.charge_id = "charged", charge_id
    db.session.commit()
    return charge_id


@df.activity(timeout=30)
def ship(order_id: int, charge_id: str) -> str:
    """Hand the paid order to the carrier; returns the tracking id."""
    order = db.session.get_one(Order, order_id)
    order.status = "shipping"
    db.session.commit()
    return _stable_id("trk", "ship", order_id)


@df.activity
def mark_fulfilled(order_id: int, tracking_id: str) -> None:
    """Record the tracking id: the order is done."""
    order = db.session.get_one(Order, order_id)
    order.status, order.tracking_id = "fulfilled", tracking_id
    db.session.commit()


@df.workflow
async def fulfil_order(ctx: WorkflowContext, order_id: int) -> dict[str, Any]:
    """Charge, ship, mark fulfilled; each step is retried and survives restarts."""
    charge_id = await ctx.activity(charge_card, order_id)
    tracking_id = await ctx.activity(ship, order_id, charge_id)
    await ctx.activity(mark_fulfilled, order_id, tracking_id)
    return {"order_id": order_id, "charge_id": charge_id, "tracking_id": tracking_id}


@df.activity
def count_orders(status: str, day: str) -> int:
    """How many orders placed on ``day`` (ISO date, UTC) are in ``status``."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    query = select(func.count()).where(
        Order.status == status,
        Order.created_at >= start,
        Order.created_at < start + timedelta(days=1),
    )
    return int(db.session.scalar(query) or 0)


@df.workflow
async def orders_in_status(ctx: WorkflowContext, status: str, day: str) -> int:
    """The child: one count, in a history of its own."""
    return await ctx.activity(count_orders, status, day)


@df.schedule("nightly-report", cron="0 3 * * *", timezone="Europe/Berlin")
@df.workflow
async def nightly_report(ctx: WorkflowContext) -> dict[str, Any]:
    """The parent, started at 03:00 Berlin time (summer and winter) on whichever worker:
    yesterday's orders by status, one child workflow each, run in parallel."""
    day = (ctx.now() - timedelta(days=1)).date().isoformat()
    statuses = ("fulfilled", "failed")
    counts = await ctx.gather(*(ctx.child(orders_in_status, s, day) for s in statuses))
    return {"day": day, **dict(zip(statuses, counts, strict=True))}
