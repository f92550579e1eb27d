"""An app whose activity fails on its first attempt and passes on its second, for metrics and
tracing tests run in worker processes (``tests.apps.flaky:app``; DF_NATS_URL and DF_NAMESPACE
from the environment)."""

from __future__ import annotations

from typing import Any

from dfcore import App, ApplicationError, RetryPolicy, activity

RETRY = RetryPolicy(max_attempts=3, initial_interval=0.05)


def declined_once(key: str) -> str:
    """An activity (register it with :data:`RETRY`) that fails its first attempt only."""
    if activity.info().attempt == 1:
        raise ApplicationError(f"{key}: declined on the first attempt")
    return f"charged {key}"


def build_app(**settings: Any) -> App:
    app = App("flaky", **settings)
    charge = app.activity(retry=RETRY, name="charge")(declined_once)

    @app.activity
    def ship(charged: str) -> str:
        return f"shipped ({charged})"

    @app.workflow
    async def order(ctx: Any, key: str) -> str:
        return await ctx.activity(ship, await ctx.activity(charge, key))

    @app.workflow
    async def broken(ctx: Any, key: str) -> str:
        raise ApplicationError(f"{key}: no such product")

    return app


app = build_app()
