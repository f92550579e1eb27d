"""Running workers for tests: in a thread with its own loop, or as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dfcore import App, Worker

ROOT = Path(__file__).resolve().parent.parent


class WorkerThread:
    """A worker on its own thread and event loop, like a separate worker process."""

    def __init__(self, app: App, **options: Any) -> None:
        self.app = app
        self.options = options
        self.worker: Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.worker = self.app.worker(**self.options)
            await self.worker.start()
            self._started.set()
            await self._stop.wait()
            await self.worker.stop()

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError(f"worker did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_worker(
    nats_url: str,
    namespace: str,
    *args: str,
    env: dict[str, str] | None = None,
    app: str = "tests.apps.orders:app",
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``df worker`` as a real process (kill it with SIGKILL to test recovery)."""
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
