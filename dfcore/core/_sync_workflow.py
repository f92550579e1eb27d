"""Plain ``def`` workflows: the code runs on its own thread and blocks at each durable call.

The engine's loop drives a coroutine that waits (on a real lock, briefly) until the workflow
thread either asks for something durable or finishes. Only one side runs at a time, so the
workflow stays deterministic. Each cached sync workflow holds one parked thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn

from dfcore.core._errors import outside_workflow


class _Evicted(BaseException):
    """Unwinds a parked workflow thread when its workflow leaves the cache."""


class SyncBridge:
    """Hands requests from the workflow thread to the loop and answers back."""

    def __init__(self) -> None:
        self._to_loop = threading.Semaphore(0)
        self._to_thread = threading.Semaphore(0)
        self.request: Callable[[], Any] | None = None
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._answer: tuple[bool, Any] = (True, None)
        self.evicted = False
        self.thread: threading.Thread | None = None  # the workflow's own

    # workflow thread side
    def call(self, make_awaitable: Callable[[], Any]) -> Any:
        if self.evicted:  # the code swallowed the eviction and asks again: unwind again
            raise _Evicted
        self.request = make_awaitable
        self._to_loop.release()
        self._to_thread.acquire()
        ok, value = self._answer
        if ok:
            return value
        raise value

    def finish(self, result: Any, error: BaseException | None) -> None:
        self.finished, self.result, self.error = True, result, error
        self._to_loop.release()

    # loop side
    def wait(self) -> None:
        self._to_loop.acquire()

    def answer(self, ok: bool, value: Any) -> None:
        self.request = None
        self._answer = (ok, value)
        self._to_thread.release()


class SyncWorkflowContext:
    """The ``ctx`` a plain ``def`` workflow receives: same API, but calls return results."""

    def __init__(self, inner: Any, bridge: SyncBridge) -> None:
        self._inner = inner
        self._bridge = bridge

    def activity(self, fn: Any, *args: Any, **options: Any) -> Any:
        """Run an activity and return its result (raises ActivityError on failure)."""
        return self._bridge.call(lambda: self._inner.activity(fn, *args, **options))

    def sleep(self, seconds: float) -> None:
        """Wait durably."""
        self._bridge.call(lambda: self._inner.sleep(seconds))

    def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait for the next signal ``name``."""
        return self._bridge.call(lambda: self._inner.wait_signal(name, timeout))

    def gather(self, *started: Any) -> list[Any]:
        """Wait for activities started with :meth:`activity_async`, which run in parallel.

        Example: ``a, b = ctx.gather(ctx.activity_async(f, 1), ctx.activity_async(g, 2))``.
        """
        return list(self._bridge.call(lambda: self._inner.gather(*started)))

    def child(self, workflow: Any, *args: Any, **options: Any) -> Any:
        """Run a child workflow and return its result (raises ChildWorkflowError)."""
        return self._bridge.call(lambda: self._inner.child(workflow, *args, **options))

    def start_child(self, workflow: Any, *args: Any, **options: Any) -> SyncChildHandle:
        """Start a child workflow; returns once it runs."""
        handle = self._bridge.call(lambda: self._inner.start_child(workflow, *args, **options))
        return SyncChildHandle(handle, self._bridge)

    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start the workflow afresh with ``args`` (does not return)."""
        if threading.current_thread() is not self._bridge.thread:
            raise outside_workflow("continue_as_new")
        raise self._inner._next_run(args)

    def activity_async(self, fn: Any, *args: Any, **options: Any) -> Any:
        """Start an activity without waiting; pass the result to :meth:`gather`.

        Safe from the workflow thread: the engine's loop is parked while this thread runs.
        """
        return self._inner.activity(fn, *args, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # now(), random(), uuid4(), logger, info ...


class SyncChildHandle:
    """A child workflow as a plain ``def`` workflow holds it: calls block until done."""

    def __init__(self, inner: Any, bridge: SyncBridge) -> None:
        self._inner = inner
        self._bridge = bridge
        self.workflow_id: str = inner.workflow_id

    def result(self) -> Any:
        return self._bridge.call(self._inner.result)

    def signal(self, name: str, payload: Any = None) -> None:
        self._bridge.call(lambda: self._inner.signal(name, payload))

    def cancel(self) -> None:
        self._bridge.call(self._inner.cancel)


async def run_sync_workflow(
    context: Any,
    workflow_id: str,
    evicting: Callable[[], bool],
    fn: Callable[..., Any],
    args: list[Any],
) -> Any:
    """Drive a plain ``def`` workflow from the engine's deterministic loop.

    Args:
        context: the workflow's async context, which the sync one wraps.
        workflow_id: names the workflow's thread.
        evicting: whether the run is leaving the cache (its thread must unwind).
        fn: the workflow function.
        args: its arguments, after ``ctx``.
    """
    bridge = SyncBridge()
    sync_ctx = SyncWorkflowContext(context, bridge)

    def body() -> None:
        try:
            bridge.finish(fn(sync_ctx, *args), None)
        except _Evicted:
            bridge.finish(None, None)
        except BaseException as exc:
            bridge.finish(None, exc)

    thread = bridge.thread = threading.Thread(target=body, name=f"df-wf-{workflow_id}", daemon=True)
    thread.start()
    while True:
        bridge.wait()
        if bridge.finished:
            if bridge.error is not None:
                raise bridge.error
            return bridge.result
        assert bridge.request is not None
        try:
            value = await bridge.request()
        except BaseException as exc:
            if isinstance(exc, GeneratorExit) or evicting():
                bridge.evicted = True
                bridge.answer(False, _Evicted())
                raise
            bridge.answer(False, exc)
        else:
            bridge.answer(True, value)
