"""Workflows of the test app, registered on the project App by autodiscovery."""

from __future__ import annotations

from typing import Any

from dfcore.integrations.django import app
from tests.apps.flaky import RETRY, declined_once
from tests.apps.orders import record


@app.activity
def greet(name: str) -> str:
    record("greet", name)
    return f"hello {name}"


@app.workflow
async def greeting(ctx: Any, name: str) -> str:
    return await ctx.activity(greet, name)


@app.workflow
async def greet_later(ctx: Any, name: str, days: float) -> str:
    await ctx.sleep(days * 24 * 3600)
    return await ctx.activity(greet, name)


# -- traced through a view, the outbox and a worker restart (tests/django/test_tracing.py) --


charge_once_declined = app.activity(retry=RETRY, name="charge_once_declined")(declined_once)


@app.workflow
async def traced_receipt(ctx: Any, charged: str) -> str:
    return await ctx.activity(greet, charged)


@app.workflow
async def traced_order(ctx: Any, key: str) -> str:
    charged = await ctx.activity(charge_once_declined, key)
    receipt = await ctx.child(traced_receipt, charged, workflow_id=f"{ctx.info.workflow_id}-rc")
    shipper = await ctx.wait_signal("ship")
    return f"{receipt}, shipped by {shipper}"
