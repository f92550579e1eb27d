"""The order workflow the fault-injection suite runs in real ``dfcore worker`` processes.

Workers import ``tests.faults.orderapp:app``, which reads DF_NATS_URL, DF_NAMESPACE and the
other settings from the environment. Every activity execution appends one line to the file
named by ``DF_FAULT_EFFECTS`` before it returns (``<kind> <order id> <value> <attempt>``). A
line is written with one ``write`` on an ``O_APPEND`` descriptor, so it survives a SIGKILL of
the process right after, and lines from several processes never interleave. The suite reads
the file to count how often each side effect happened.

Each activity takes a random time between ``DF_FAULT_MIN_PAUSE`` (default 0) and
``DF_FAULT_PAUSE`` (default 0.2) seconds, so a fault lands while many are in flight; the
slow-activity test makes every one longer than the consumer's ack wait.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from typing import Any

from dfcore import App, RetryPolicy, activity

app = App("faults")

# An attempt that loses its worker twice is recorded as failed (WorkerLost), so faults can cost
# attempts; enough of them that three faults in a row never exhaust the policy, unless a test
# sets DF_FAULT_MAX_ATTEMPTS (3 is the default RetryPolicy's).
RETRY = RetryPolicy(
    max_attempts=int(os.environ.get("DF_FAULT_MAX_ATTEMPTS", "20")),
    initial_interval=0.2,
    backoff=2.0,
    max_interval=2.0,
)


def record(kind: str, order_id: str, value: str) -> None:
    """Append one side-effect line to DF_FAULT_EFFECTS (atomically, durably across SIGKILL)."""
    path = os.environ.get("DF_FAULT_EFFECTS")
    if not path:
        return
    line = f"{kind} {order_id} {value} {activity.info().attempt}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def pause() -> float:
    """Seconds this execution takes: uniform between DF_FAULT_MIN_PAUSE and DF_FAULT_PAUSE."""
    low = float(os.environ.get("DF_FAULT_MIN_PAUSE", "0"))
    return random.uniform(low, max(low, float(os.environ.get("DF_FAULT_PAUSE", "0.2"))))


@app.activity(retry=RETRY, timeout=60)
def charge(order_id: str, amount: float) -> dict[str, Any]:
    """Charge the card (a sync activity, run on a worker thread)."""
    time.sleep(pause())
    charge_id = f"ch_{uuid.uuid4().hex[:12]}"
    record("charge", order_id, charge_id)
    return {"charge_id": charge_id, "amount": amount}


@app.activity(retry=RETRY, timeout=60)
async def ship(order_id: str, payment: dict[str, Any]) -> dict[str, Any]:
    """Ship the parcel (an async activity, run on the worker's loop)."""
    await asyncio.sleep(pause())
    tracking_id = f"tr_{uuid.uuid4().hex[:12]}"
    record("ship", order_id, f"{payment['charge_id']}:{tracking_id}")
    return {"tracking_id": tracking_id}


@app.workflow
async def order(ctx: Any, order_id: str, amount: float) -> dict[str, Any]:
    payment = await ctx.activity(charge, order_id, amount)
    parcel = await ctx.activity(ship, order_id, payment)
    return {"order_id": order_id, "charge_id": payment["charge_id"], **parcel}
