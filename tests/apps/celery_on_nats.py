"""A plain Celery app, as a Celery user writes it: only its broker and result URLs are ours.

The tests point it at their server and keep each test apart with the environment:
``DF_TEST_BROKER`` (a ``dfnats://`` URL), ``DF_TEST_KOMBU`` (the virtual host, which names the
stream and subjects, and the results bucket of one test) and ``DF_TEST_VISIBILITY`` (seconds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

from tests.apps.orders import record

_name = os.environ.get("DF_TEST_KOMBU", "")
_url = os.environ.get("DF_TEST_BROKER", "dfnats://127.0.0.1:4222")

app = Celery("celery_on_nats", broker=f"{_url}/{_name}", backend=_url)
app.conf.update(
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("DF_TEST_VISIBILITY", "300")),
    },
    result_backend_transport_options={"bucket": f"{_name}-results"},
    task_acks_late=os.environ.get("DF_TEST_ACKS_LATE") == "1",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def hold(key: str) -> str:
    """Record the start, wait until the test releases ``key`` (a file), record the end."""
    record("start", f"{key} {os.getpid()}")
    release = Path(os.environ["DF_TEST_SIDE_EFFECTS"]).with_name(f"release-{key}")
    deadline = time.monotonic() + 120
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # the task's own work: waiting for the test's signal
    record("done", key)
    return key
