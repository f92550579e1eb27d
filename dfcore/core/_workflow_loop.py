"""A deterministic asyncio event loop for workflow code.

It performs no I/O and reads no clock: ``time()`` is the workflow's recorded time, and every timer
(``call_later``/``call_at``, hence ``asyncio.sleep``, ``wait_for`` and ``asyncio.timeout``) is
handed to the engine, which turns it into a durable timer command. The engine drives the loop with
:meth:`DeterministicLoop.run_until_idle` after applying each history fact.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

_T = TypeVar("_T")


class DeterministicLoop(asyncio.AbstractEventLoop):
    """Runs workflow tasks step by step; timers are delegated to ``start_timer``."""

    def __init__(
        self,
        clock: Callable[[], float],
        start_timer: Callable[[asyncio.TimerHandle], None],
        report_error: Callable[[dict[str, Any]], None],
    ) -> None:
        self._ready: deque[asyncio.Handle] = deque()
        self._clock = clock
        self._start_timer = start_timer
        self._report_error = report_error
        self._running = False

    # -- driving --------------------------------------------------------------------------

    def run_until_idle(self) -> None:
        """Run callbacks until every workflow task is blocked on something external."""
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running = True
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
        finally:
            self._running = False
            asyncio.events._set_running_loop(outer)

    def fire(self, handle: asyncio.TimerHandle) -> None:
        """Queue a timer's callback (its durable timer fired)."""
        if not handle.cancelled():
            self._ready.append(handle)

    # -- the AbstractEventLoop surface asyncio's own code uses ------------------------------

    def time(self) -> float:
        return self._clock()

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self.time() + max(delay, 0.0), callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self._start_timer(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """A cancelled timer stays recorded; its firing is ignored."""

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self._report_error(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self._report_error(context)

    def get_exception_handler(self) -> None:
        return None

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        raise RuntimeError(
            "workflow code must not use threads; call activities for blocking or I/O work"
        )

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        raise RuntimeError(
            "workflow code cannot run blocking functions; move the work into an activity "
            "and call it with ctx.activity(...)"
        )
