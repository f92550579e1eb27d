"""``dfcore demo``: the order workflow on an embedded JetStream server, one worker in-process.

It prints each history event as it is recorded, including a shipping step that fails once
(a simulated outage) and succeeds on its second attempt after a durable backoff timer.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from dfcore import activity
from dfcore._app import App
from dfcore.core._definitions import RetryPolicy
from dfcore.core._history import HistoryEvent
from dfcore.jetstream._server import EmbeddedServer

app = App("demo", namespace="demo")


@app.activity(timeout=10)
def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]:
    """Charge the customer (a stand-in for a payment API call)."""
    return {
        "charge_id": f"ch_{uuid.uuid4().hex[:10]}",
        "customer_id": customer_id,
        "amount": amount,
    }


@app.activity(timeout=10, retry=RetryPolicy(max_attempts=3, initial_interval=1.0))
async def ship_package(charge: dict[str, Any], product_id: str, quantity: int) -> dict[str, Any]:
    """Ship the order; the first attempt fails as if the carrier's API were down."""
    if activity.info().attempt == 1:
        raise ConnectionError("carrier API unavailable (simulated outage, will be retried)")
    return {
        "tracking_id": f"tr_{uuid.uuid4().hex[:10]}",
        "product_id": product_id,
        "quantity": quantity,
    }


@app.workflow
async def order(
    ctx: Any, customer_id: str, product_id: str, amount: float, quantity: int
) -> dict[str, Any]:
    """Charge the card, then ship the package; return both references."""
    charge = await ctx.activity(charge_credit_card, customer_id, amount)
    shipped = await ctx.activity(ship_package, charge, product_id, quantity)
    return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}


def _print_event(event: HistoryEvent) -> None:
    print(f"  {event.index:>3}  {event.type:<20} {event.summary()}", flush=True)


async def _run() -> dict[str, Any]:
    worker = app.worker()
    await worker.start()
    try:
        workflow_id = f"order-{uuid.uuid4().hex[:8]}"
        handle = await order.astart("Bob", "widget-1000", 1000.0, 2, workflow_id=workflow_id)
        print(f"Started workflow {workflow_id}; history as it is recorded:\n")
        print(f"  {'SEQ':>3}  {'EVENT':<20} DETAILS")
        shown = 0
        result_task = asyncio.ensure_future(handle.aresult(timeout=60))
        while True:
            events = await handle.ahistory()
            for event in events[shown:]:
                _print_event(event)
            shown = len(events)
            if result_task.done():
                events = await handle.ahistory()
                for event in events[shown:]:
                    _print_event(event)
                return dict(await result_task)
            await asyncio.wait({result_task}, timeout=0.05)
    finally:
        await worker.stop()
        await app.aclose()


def main(data_dir: str = ".df/demo") -> int:
    """Run the demo; return a process exit code."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(
        path / "nats", log_file=str(path / "nats.log"), kill_with_parent=True
    ) as server:
        print(f"Embedded NATS JetStream at {server.url} (data in {path / 'nats'})")
        app.configure(nats_url=server.url)
        result = asyncio.run(_run())
    print(f"\nResult: {result}")
    return 0
