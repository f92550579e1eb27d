"""A worker on a background thread, for commands that keep the main thread (``df_dev``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from dfcore.core._errors import DFError
from dfcore.worker._worker import Worker


class WorkerThread:
    """A worker on its own thread and event loop (signals stay with the main thread).

    ``worker`` is a :class:`Worker`, or a callable that builds one; it is called on the
    thread's loop, so the worker's connection belongs to that loop. A context manager::

        with WorkerThread(lambda: app.worker()):
            ...
    """

    def __init__(self, worker: Worker | Callable[[], Worker]) -> None:
        self._build: Callable[[], Worker] = (
            (lambda: worker) if isinstance(worker, Worker) else worker
        )
        self.worker: Worker | None = worker if isinstance(worker, Worker) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dfcore-worker", daemon=True)

    def start(self, timeout: float | None = None) -> WorkerThread:
        """Start the worker and wait until it consumes (at most ``timeout`` seconds).

        Raises:
            DFError: the worker could not start (the cause is chained), or did not in time.
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise DFError(f"the worker did not start within {timeout} s")
        if self._error is not None:
            raise DFError(f"the worker could not start: {self._error}") from self._error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Let in-flight work finish (up to the shutdown timeout), then disconnect."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.worker = worker = self._build()
        await worker.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await worker.stop()
