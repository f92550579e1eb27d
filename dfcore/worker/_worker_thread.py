"""A worker on a background thread, for commands that keep the main thread (``df_dev``)."""

from __future__ import annotations

import asyncio
import threading

from dfcore.core._errors import DFError
from dfcore.worker._worker import Worker


class WorkerThread:
    """A worker on its own thread and event loop (signals stay with the main thread)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dfcore-dev-worker", daemon=True)

    def start(self) -> None:
        """Start the worker and wait until it consumes.

        Raises:
            DFError: the worker could not start (the cause is chained).
        """
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise DFError(f"the worker could not start: {self._error}") from self._error

    def stop(self) -> None:
        """Let in-flight work finish (up to the shutdown timeout), then disconnect."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

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
        await self.worker.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.worker.stop()
