"""Workflows of the test app, registered on the project App by autodiscovery."""

from __future__ import annotations

from typing import Any

from dfcore.integrations.django import app
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
