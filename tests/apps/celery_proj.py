"""A Celery-style project on the facade: the imports are the only change from Celery."""

from __future__ import annotations

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
