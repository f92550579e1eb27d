"""Running workers for tests: in a thread with its own loop, or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dfcore import App
from dfcore.worker import _worker_thread as worker_thread

ROOT = Path(__file__).resolve().parent.parent


class WorkerThread(worker_thread.WorkerThread):
    """A worker of ``app`` on its own thread and event loop, like a separate worker process."""

    def __init__(self, app: App, **options: Any) -> None:
        super().__init__(lambda: app.worker(**options))
        self.app = app

    def start(self, timeout: float | None = 30) -> WorkerThread:
        super().start(timeout)
        return self

    def stop(self, timeout: float | None = 60) -> None:
        super().stop(timeout)


def spawn_worker(
    nats_url: str,
    namespace: str,
    *args: str,
    env: dict[str, str] | None = None,
    app: str = "tests.apps.orders:app",
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``dfcore worker`` as a real process (kill it with SIGKILL to test recovery)."""
    environ = {**os.environ, "DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace, **(env or {})}
    command = [sys.executable, "-m", "dfcore", "worker", "-A", app, *args]
    return popen(command, environ, log if log is not None else subprocess.DEVNULL)


def popen(
    command: list[str],
    env: dict[str, str],
    output: Path | int = subprocess.PIPE,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``command`` (in the repository root by default); stdout and stderr go to
    ``output``: a log file to append to, or a subprocess constant (``PIPE``, ``DEVNULL``)."""
    if not isinstance(output, Path):
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    with open(output, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def starts_of(app: App, workflow_id: str) -> int:
    """How many WorkflowStarted events the workflow's history holds."""
    history = app.get_handle(workflow_id).history()
    return sum(1 for event in history if event.type == "WorkflowStarted")


def visible_options(command: Any) -> set[str]:
    """The options a click command shows in its ``--help``."""
    return {
        opt for param in command.params if not getattr(param, "hidden", False) for opt in param.opts
    }


@contextmanager
def on_test_server(app: App, nats_url: str, namespace: str) -> Iterator[App]:
    """A test app module's ``app`` pointed at this test's server and namespace, then back."""
    from dfcore.client._loopthread import run_sync

    restore = app._override(nats_url=nats_url, namespace=namespace)
    try:
        yield app
    finally:
        run_sync(app.aclose())
        restore()
