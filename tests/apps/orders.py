"""The order workflow used by end-to-end and process tests.

Subprocess workers import ``tests.apps.orders:app``; it reads DF_NATS_URL and DF_NAMESPACE from
the environment. Activities append a line per execution to the file named by
DF_TEST_SIDE_EFFECTS, so tests can count executions across process kills.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from dfcore import App, RetryPolicy

ORDER_EVENTS = [
    "WorkflowStarted",
    "ActivityScheduled",
    "ActivityCompleted",
    "ActivityScheduled",
    "ActivityCompleted",
    "WorkflowCompleted",
]
"""The history of one order workflow, event by event."""


def record(kind: str, key: str) -> None:
    path = os.environ.get("DF_TEST_SIDE_EFFECTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{kind} {key}\n")


def build_app(**settings: Any) -> App:
    app = App("orders", **settings)

    @app.activity(timeout=10)
    def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]:
        record("charge", customer_id)
        return {"charge_id": f"ch_{uuid.uuid4().hex[:8]}", "amount": amount}

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.1))
    async def ship_package(charge: dict[str, Any], quantity: int) -> dict[str, Any]:
        record("ship", charge["charge_id"])
        return {"tracking_id": f"tr_{uuid.uuid4().hex[:8]}", "quantity": quantity}

    @app.workflow
    async def order(ctx: Any, customer_id: str, amount: float, quantity: int) -> dict[str, Any]:
        charge = await ctx.activity(charge_credit_card, customer_id, amount)
        shipped = await ctx.activity(ship_package, charge, quantity)
        return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}

    @app.workflow
    async def order_with_approval(ctx: Any, customer_id: str, amount: float) -> dict[str, Any]:
        charge = await ctx.activity(charge_credit_card, customer_id, amount)
        approval = await ctx.wait_signal("approve")
        shipped = await ctx.activity(ship_package, charge, 1)
        return {
            "charge_id": charge["charge_id"],
            "approved_by": approval,
            "tracking_id": shipped["tracking_id"],
        }

    @app.workflow
    def order_sync(ctx: Any, customer_id: str, amount: float, quantity: int) -> dict[str, Any]:
        charge = ctx.activity(charge_credit_card, customer_id, amount)
        shipped = ctx.activity(ship_package, charge, quantity)
        return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.1))
    def slow_once(key: str) -> str:
        from dfcore import activity

        record("slow", f"{key} attempt {activity.info().attempt}")
        if activity.info().attempt == 1:
            import time

            time.sleep(60)  # the test kills the worker meanwhile
        return "done"

    @app.workflow
    async def slow_flow(ctx: Any, key: str) -> str:
        return await ctx.activity(slow_once, key)

    return app


app = build_app()
