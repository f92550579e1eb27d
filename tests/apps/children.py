"""Parent and child workflows for the child-workflow tests, run by real worker processes.

``DF_TEST_DIE_BEFORE_CHILD_RECORD=1`` makes the worker process kill itself (SIGKILL) right
after it made a child's history and before the parent's history records it: the crash the
child-workflow tests need, at the one moment that matters.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from dfcore import App, ApplicationError, ChildWorkflowError
from tests.apps.orders import record

app = App("children")


@app.activity
def bill(order_id: str) -> str:
    record("bill", order_id)
    return f"inv-{order_id}"


@app.activity
def decline(order_id: str) -> str:
    raise ApplicationError(f"card for {order_id} declined", non_retryable=True)


@app.workflow
async def invoice(ctx: Any, order_id: str) -> dict[str, str]:
    return {"invoice": await ctx.activity(bill, order_id)}


@app.workflow
async def declined_invoice(ctx: Any, order_id: str) -> dict[str, str]:
    return {"invoice": await ctx.activity(decline, order_id)}


@app.workflow
async def checkout(ctx: Any, order_id: str) -> dict[str, Any]:
    billed = await ctx.child(invoice, order_id)
    try:
        await ctx.child(declined_invoice, order_id)
    except ChildWorkflowError as exc:
        return {**billed, "second": [exc.status, exc.cause_type, exc.workflow_id]}
    return billed


@app.workflow
async def waits(ctx: Any) -> str:
    return str(await ctx.wait_signal("go"))


@app.workflow
async def supervise(ctx: Any, policy: str) -> str:
    handle = await ctx.start_child(waits, parent_close_policy=policy)
    return str(await handle)


if os.environ.get("DF_TEST_DIE_BEFORE_CHILD_RECORD"):
    import dfcore.worker._children as _children

    def _die(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    _children.ChildWorkflowStarted = _die  # type: ignore[assignment,misc]
