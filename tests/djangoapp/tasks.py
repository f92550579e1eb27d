"""Django tasks (``django.tasks``, Django 6.0+) for the DFTaskBackend tests.

Not autodiscovered (only ``workflows`` and ``activities`` are): the tests import it on Django
6.0+, and a worker imports each task by its module path when it runs it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from django.tasks import TaskContext, task

#: Set by a test to let ``blocking`` return (worker threads share this process).
RELEASE = threading.Event()


@task
def add(a: int, b: int) -> int:
    return a + b


@task
async def add_async(a: int, b: int) -> int:
    return a + b


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task(takes_context=True)
def flaky(context: TaskContext, marker: str) -> dict[str, Any]:
    """Fail the first attempt (the marker file does not exist yet), succeed on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("attempted")
        raise RuntimeError("first attempt fails")
    return {"attempt": context.attempt, "id": context.task_result.id}


@task
def always_fails() -> None:
    raise ValueError("this task always fails")


@task
def bad_input() -> None:
    raise KeyError("bad input")


@task
def unstorable() -> object:
    return object()  # Django stores return values as JSON: this one cannot be


@task
def blocking() -> str:
    """Run until the test sets RELEASE (it watches the task while it is RUNNING)."""
    if not RELEASE.wait(60):
        raise TimeoutError("the test never released this task")
    return "released"
