"""The order workload as a Celery project writes it: a chain of two tasks.

``BENCH_CELERY=facade`` imports ``Celery`` from ``dfcore.contrib.celery`` instead of ``celery``
(the facade's one change), and then DurableFuture's settings apply (``DF_NATS_URL``,
``DF_NAMESPACE``). Otherwise the broker and result backend come from ``BENCH_BROKER`` and
``BENCH_BACKEND``, so the same code runs on Redis and on ``dfnats://``.
"""

from __future__ import annotations

import os
from typing import Any

if os.environ.get("BENCH_CELERY") == "facade":
    from dfcore.contrib.celery import Celery
else:
    from celery import Celery

app = Celery(
    "bench_order",
    broker=os.environ.get("BENCH_BROKER", "dfnats://127.0.0.1:4222"),
    backend=os.environ.get("BENCH_BACKEND", "dfnats://127.0.0.1:4222"),
)


@app.task
def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]:
    return {"charge_id": f"ch_{customer_id}", "amount": amount}


@app.task
def ship_package(charge: dict[str, Any], quantity: int) -> dict[str, Any]:
    return {"tracking_id": "tr_" + charge["charge_id"][3:], "quantity": quantity}
