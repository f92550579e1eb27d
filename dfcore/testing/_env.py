"""The :class:`WorkflowEnvironment` of :mod:`dfcore.testing`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from dfcore._app import App, WorkflowFunction
from dfcore.client._handle import WorkflowHandle
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._connection import close_connection, connect
from dfcore.jetstream._store import Store
from dfcore.jetstream._timeskip import fire_now, pending_timers, workers_idle
from dfcore.worker._worker_thread import WorkerThread

POLL = 0.02
"""Seconds between looks at a running workflow, its timers and the workers (within deadlines)."""


class WorkflowEnvironment:
    """A worker for ``app`` in this process, on a server and a namespace of the test's own.

    ``start()`` (or ``with``) points the App at ``nats_url`` and ``namespace`` and runs a worker
    for it on a thread of its own; ``stop()`` drains it. Everything else is real: the engine, the
    server, the streams.

    Time skipping: with ``time_skipping`` (the default), :meth:`run` and :meth:`result` fire the
    earliest pending durable timer as soon as the workers are idle (no task waiting, none being
    worked on), so a workflow that sleeps 30 days ends in milliseconds, its timers firing in
    their order. :meth:`skip` fires the timers pending now on demand. The workflow's clock,
    ``ctx.now()``, keeps following the server's: skipping moves no clock.

    Args:
        app: the App whose workflows and activities are tested.
        nats_url, namespace: where to run (the App's own settings when not given).
        time_skipping: fire timers early in :meth:`run` and :meth:`result`.
        **worker_options: for ``app.worker(...)`` (``task_queues``, ``activity_concurrency``...).
    """

    def __init__(
        self,
        app: App,
        *,
        nats_url: str | None = None,
        namespace: str | None = None,
        time_skipping: bool = True,
        **worker_options: Any,
    ) -> None:
        self.app = app
        self.time_skipping = time_skipping
        self._settings = {
            key: value
            for key, value in (("nats_url", nats_url), ("namespace", namespace))
            if value is not None
        }
        self._worker_options = worker_options
        self._worker: WorkerThread | None = None
        self._restore: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<WorkflowEnvironment {self.app!r}>"

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> WorkflowEnvironment:
        """Configure the App and start its worker (raises ``DFError`` if it cannot start)."""
        if self._settings:
            self._restore = self.app._override(**self._settings)
        self._worker = WorkerThread(lambda: self.app.worker(**self._worker_options))
        self._worker.start(timeout=60)
        return self

    def stop(self) -> None:
        """Stop the worker (in-flight work drains), close the App's sync connection and give
        the App back its own settings."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.app.close()
        if self._restore is not None:
            self._restore()
            self._restore = None

    def __enter__(self) -> WorkflowEnvironment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> WorkflowEnvironment:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.app.aclose()  # this loop's connection, before the worker stops
        self.stop()

    # -- running workflows ------------------------------------------------------------------

    async def run(
        self,
        workflow: str | WorkflowFunction[..., Any],
        *args: Any,
        timeout: float = 60.0,
        **start_options: Any,
    ) -> Any:
        """Start ``workflow(*args)`` and return its result (``WorkflowFailureError`` if it
        fails). ``start_options`` are those of ``App.astart`` (``workflow_id``, ...).

        Raises:
            TimeoutError: it did not end within ``timeout`` seconds of real time.
        """
        handle = await self.app.astart(workflow, *args, **start_options)
        return await self.result(handle, timeout=timeout)

    def run_sync(
        self,
        workflow: str | WorkflowFunction[..., Any],
        *args: Any,
        timeout: float = 60.0,
        **start_options: Any,
    ) -> Any:
        """Sync twin of :meth:`run`."""
        return run_sync(self.run(workflow, *args, timeout=timeout, **start_options))

    async def result(self, handle: WorkflowHandle[Any], *, timeout: float = 60.0) -> Any:
        """Wait for ``handle``'s result, skipping time while the workers are idle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._store() as store:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(
                        f"workflow {handle.workflow_id!r} did not end within {timeout} s; "
                        "its history (handle.history()) shows what it waits for"
                    )
                with contextlib.suppress(TimeoutError):
                    return await handle.aresult(timeout=min(POLL, left))
                if self.time_skipping and await workers_idle(store):
                    timers = await pending_timers(store)
                    if timers:
                        await fire_now(store, timers[0])

    async def skip(self, *, timeout: float = 60.0) -> int:
        """Let the workers settle, then fire every durable timer pending, the earliest first,
        each once the workers are idle again; return how many fired. Timers started meanwhile
        wait for the next skip.

        Raises:
            TimeoutError: the workers were not idle within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fired = 0
        async with self._store() as store:

            async def settled() -> None:
                while not await workers_idle(store):
                    if loop.time() > deadline:
                        raise TimeoutError(f"the workers were still busy after {timeout} s")
                    await asyncio.sleep(POLL)  # poll interval; the deadline bounds the wait

            await settled()  # what was just started has started its timers
            wanted = {timer.subject for timer in await pending_timers(store)}
            while wanted:
                await settled()
                due = [t for t in await pending_timers(store) if t.subject in wanted]
                if not due:
                    break  # the rest ended with their workflows
                await fire_now(store, due[0])
                wanted.discard(due[0].subject)
                fired += 1
        return fired

    def skip_sync(self, *, timeout: float = 60.0) -> int:
        """Sync twin of :meth:`skip`."""
        return run_sync(self.skip(timeout=timeout))

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[Store]:
        """A connection of the environment's own, for the timers and the consumers."""
        settings = self.app.settings
        nc = await connect(settings, f"dfcore-testing:{self.app.name}")
        try:
            store = Store(nc, settings, self.app.client.codec)
            await store.ensure()  # the streams exist then, and the store's replies are routed
            yield store
        finally:
            await close_connection(nc)
