"""One background event loop per process for sync callers.

Sync APIs (``start``, ``result``, ...) run the async implementation on this loop, so every sync
call in a process shares one loop and one NATS connection per App, instead of making new ones.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

_T = TypeVar("_T")


class EventLoopThread:
    """A daemon thread running an asyncio loop forever; restarted after ``fork``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="dfcore-sync-loop", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def owns(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` is this thread's loop (without starting the thread)."""
        return loop is self._loop and self._pid == os.getpid()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the background loop and block until it finishes."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a sync DurableFuture call was made on the library's own loop thread; "
                "use the async twin (astart, aresult, ...) in async code"
            )
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result()

    def shutdown(self, coro: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run a final clean-up coroutine (e.g. close connections), then stop the loop."""
        if self._loop is None or self._pid != os.getpid() or not self._loop.is_running():
            if coro is not None:
                coro.close()
            return
        if coro is not None:
            try:
                asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=5)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)


SYNC_LOOP = EventLoopThread()


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run an async implementation for a sync caller."""
    return SYNC_LOOP.run(coro)


_closers: list[Callable[[], Callable[[], Awaitable[Any]] | None]] = []


def on_exit(closer: Callable[[], Awaitable[Any]]) -> None:
    """Register an async ``closer()`` run on the sync loop at interpreter exit.

    A bound method is held weakly, so registering ``app.aclose`` does not keep a short-lived
    App (one per test, say) alive until exit.
    """
    ref: Callable[[], Callable[[], Awaitable[Any]] | None]
    if hasattr(closer, "__self__") and hasattr(closer, "__func__"):
        ref = weakref.WeakMethod(closer)
    else:
        ref = lambda: closer  # noqa: E731
    _closers[:] = [r for r in _closers if r() is not None]
    _closers.append(ref)


@atexit.register
def _close_all() -> None:
    async def close() -> None:
        for ref in _closers:
            closer = ref()
            if closer is None:
                continue
            try:
                await closer()
            except Exception:
                pass

    SYNC_LOOP.shutdown(close())
