"""A Celery-style project on the facade: the imports are the only change from Celery."""

from __future__ import annotations

import threading
from typing import Any

from dfcore.contrib.celery import Celery, shared_task
from tests.apps.orders import record

app = Celery("celeryproj")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=0.05)
def flaky(self, key: str) -> dict:
    record("flaky", f"{key} {self.request.retries}")
    if self.request.retries < 2:
        raise ConnectionError(f"carrier down for {key}")
    return {"key": key, "retries": self.request.retries, "id": self.request.id}


@shared_task(bind=True, max_retries=1)
def by_hand(self, wanted: int) -> int:
    if self.request.retries < wanted:
        raise self.retry(exc=ValueError(f"not yet: {self.request.retries}"), countdown=0.05)
    return self.request.retries


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def fails(key: str) -> None:
    raise KeyError(f"no {key}")


@app.task(autoretry_for=(ConnectionError,), dont_autoretry_for=(ConnectionRefusedError,))
def refused() -> None:
    raise ConnectionRefusedError("refused, for good")


#: Holds ``gated`` until a test opens it (the worker runs in the test's process).
GATE = threading.Event()


@app.task
def gated(value: int) -> int:
    if not GATE.wait(30):
        raise TimeoutError("the gate was not opened")
    return value


@app.task
def on_failure(request: Any, exc: BaseException, traceback: str | None) -> dict:
    """A new-style errback: Celery gives it the failed task's request, exception and traceback."""
    return {
        "id": request.id,
        "task": request.task,
        "args": request.args,
        "error": [type(exc).__name__, exc.args[0]],
        "traceback": traceback and traceback.splitlines()[-1],
    }


@app.task
def failed_id(task_id: str, note: str) -> list[str]:
    """An old-style errback: it gets the failed task's id (before its own arguments)."""
    return [task_id, note]
