"""An app for the log tests (``tests.apps.logged:app``; DF_NATS_URL and DF_NAMESPACE from the
environment): a workflow that logs through ``ctx.logger``, whose activity fails once and is
retried, with a timer and a signal; one that continues as new once; one whose code has a bug."""

from __future__ import annotations

from typing import Any

from dfcore import App

from .flaky import RETRY, declined_once


def build_app(**settings: Any) -> App:
    app = App("logged", **settings)

    charge = app.activity(retry=RETRY, name="charge")(declined_once)

    @app.activity
    def count(n: int) -> int:
        return n

    @app.workflow
    async def logged_order(ctx: Any, key: str) -> dict[str, Any]:
        ctx.logger.info("charging %s", key)
        charged = await ctx.activity(charge, key)
        await ctx.sleep(0.05)
        approved = await ctx.wait_signal("approve")
        return {"charged": charged, "approved": approved}

    @app.workflow
    async def logged_loop(ctx: Any, n: int) -> int:
        await ctx.activity(count, n)
        if n < 2:
            ctx.continue_as_new(n + 1)
        return n

    @app.workflow
    async def logged_bug(ctx: Any) -> None:
        raise KeyError("a bug in the workflow code")  # the task fails, and is retried

    return app


app = build_app()
