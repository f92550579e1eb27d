"""Today's code of ``tests.apps.orders``' order workflow, changed after runs were recorded.

``patched_app`` guards the change with ``ctx.patched``; ``unguarded_app`` makes it bare, which
histories recorded before it cannot replay. Both read DF_NATS_URL and DF_NAMESPACE.
"""

from __future__ import annotations

from typing import Any

from dfcore import App
from tests.apps.orders import build_app, record


def build_changed_app(guarded: bool, **settings: Any) -> App:
    app = App("orders", **settings)
    recorded_by = build_app()  # the activities are unchanged: the same definitions
    charge_credit_card = app.registry.add_activity(recorded_by.activities["charge_credit_card"])
    ship_package = app.registry.add_activity(recorded_by.activities["ship_package"])

    @app.activity
    def gift_wrap(charge: dict[str, Any]) -> str:
        record("wrap", charge["charge_id"])
        return "wrapped"

    @app.workflow
    async def order(ctx: Any, customer_id: str, amount: float, quantity: int) -> dict[str, Any]:
        charge = await ctx.activity(charge_credit_card, customer_id, amount)
        if not guarded or ctx.patched("gift-wrap"):
            await ctx.activity(gift_wrap, charge)
        shipped = await ctx.activity(ship_package, charge, quantity)
        return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}

    @app.workflow
    async def order_with_approval(ctx: Any, customer_id: str, amount: float) -> dict[str, Any]:
        early = ctx.patched("note-early")  # a run recorded before the deploy decided past here
        charge = await ctx.activity(charge_credit_card, customer_id, amount)
        approval = await ctx.wait_signal("approve")
        wrapped = ctx.patched("wrap-after-approval")  # ... but had not reached this point
        if wrapped:
            await ctx.activity(gift_wrap, charge)
        shipped = await ctx.activity(ship_package, charge, 1)
        return {
            "charge_id": charge["charge_id"],
            "approved_by": approval,
            "tracking_id": shipped["tracking_id"],
            "patches": [early, wrapped],
        }

    return app


patched_app = build_changed_app(True)
unguarded_app = build_changed_app(False)
