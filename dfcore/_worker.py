"""Workers: serve the workflow tasks (``_workflow_tasks``) and activity tasks
(``_activity_tasks``) of an App's task queues, over one connection.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._activity_tasks import ActivityRunner
from ._connection import close_connection, connect
from ._errors import DFError
from ._naming import check_queue
from ._pull import PullConsumer
from ._store import Store
from ._workflow_tasks import WorkflowProcessor

if TYPE_CHECKING:
    from ._app import App

log = logging.getLogger("dfcore.worker")


class Worker:
    """Serves workflow tasks and/or activity tasks of one App on some task queues.

    Args:
        app: the App whose workflows and activities to run.
        task_queues: queues to serve (default: the App's ``task_queue`` setting).
        workflows: serve workflow tasks.
        activities: serve activity tasks.
        activity_concurrency: max activities at once (default: the setting).
        workflow_concurrency: max workflow tasks at once (default: the setting).
        shutdown_timeout: on stop, how long in-flight work may take before it is handed back.
    """

    def __init__(
        self,
        app: App,
        *,
        task_queues: Sequence[str] | None = None,
        workflows: bool = True,
        activities: bool = True,
        activity_concurrency: int | None = None,
        workflow_concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if not workflows and not activities:
            raise DFError("a worker must serve workflows, activities, or both")
        settings = app.settings
        self.app = app
        self.queues = [check_queue(q) for q in (task_queues or [settings.task_queue])]
        self.serve_workflows = workflows
        self.serve_activities = activities
        self.activity_concurrency = activity_concurrency or settings.activity_concurrency
        self.workflow_concurrency = workflow_concurrency or settings.workflow_concurrency
        self.shutdown_timeout = shutdown_timeout
        self.store: Store | None = None
        self._pullers: list[PullConsumer] = []
        self._activity_runner: ActivityRunner | None = None
        self._processors: list[WorkflowProcessor] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, create streams and consumers, and start consuming."""
        settings = self.app.settings
        nc = await connect(settings, f"dfcore-worker:{self.app.name}", self._reconnected)
        self.store = store = Store(nc, settings, self.app.codec)
        await store.ensure()
        lay = store.layout
        for queue in self.queues:
            if self.serve_workflows:
                name = lay.workflow_consumer(queue)
                await store.ensure_consumer(
                    lay.history_stream, name, lay.history_filter(queue), settings.workflow_ack_wait
                )
                processor = WorkflowProcessor(self.app, store)
                self._processors.append(processor)
                self._pullers.append(
                    PullConsumer(
                        nc,
                        lay.history_stream,
                        name,
                        processor.handle,
                        max_inflight=self.workflow_concurrency,
                    )
                )
                self._pullers.append(await self._admission_puller(processor, queue))
            if self.serve_activities:
                name = lay.activity_consumer(queue)
                await store.ensure_consumer(
                    lay.tasks_stream, name, lay.task_subject(queue), settings.activity_ack_wait
                )
                runner = self._activity_runner or ActivityRunner(self.app, store)
                self._activity_runner = runner
                self._pullers.append(
                    PullConsumer(
                        nc,
                        lay.tasks_stream,
                        name,
                        runner.handle,
                        max_inflight=self.activity_concurrency,
                        give_back=runner.requeue,
                    )
                )
        if self._activity_runner is not None:
            await self._activity_runner.start()
        for puller in self._pullers:
            await puller.start()
        if self._processors:
            self._sweeper = asyncio.create_task(self._sweep_idle(settings.workflow_ack_wait / 2))
        log.info(
            "worker for app %r serving %s on queues %s (NATS %s, namespace %r)",
            self.app.name,
            self._what(),
            ", ".join(self.queues),
            settings.display_url,
            settings.namespace,
        )

    async def _admission_puller(self, processor: WorkflowProcessor, queue: str) -> PullConsumer:
        """Pulls deferred starts of ``queue`` only while the processor has room to cache them."""
        assert self.store is not None
        store, lay = self.store, self.store.layout
        name = lay.admit_consumer(queue)
        await store.ensure_consumer(
            lay.tasks_stream, name, lay.admit_subject(queue), self.app.settings.workflow_ack_wait
        )
        puller = PullConsumer(
            store.nc,
            lay.tasks_stream,
            name,
            processor.admit,
            max_inflight=self.workflow_concurrency,
            room=processor.room,
            min_batch=max(1, processor.capacity // 16),
        )
        processor.attach_admission(puller)
        return puller

    def _what(self) -> str:
        parts = ["workflows"] if self.serve_workflows else []
        return " and ".join(parts + (["activities"] if self.serve_activities else []))

    async def _reconnected(self) -> None:
        for puller in self._pullers:
            puller.on_reconnected()

    async def _sweep_idle(self, every: float) -> None:
        """Evict idle runs now and then, so room for deferred starts is never held by them."""
        while True:
            await asyncio.sleep(every)
            for processor in self._processors:
                processor.sweep_idle()

    async def stop(self) -> None:
        """Stop taking work, let in-flight work finish (up to shutdown_timeout), disconnect."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(p.stop(self.shutdown_timeout) for p in self._pullers))
        if self._activity_runner is not None:
            await self._activity_runner.stop()
        for processor in self._processors:
            processor.close()
        if self.store is not None:
            await close_connection(self.store.nc)

    async def run(self, *, handle_signals: bool = False, stop: asyncio.Event | None = None) -> None:
        """Start, run until ``stop`` is set (or SIGTERM/SIGINT if ``handle_signals``), stop."""
        stop = stop or asyncio.Event()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("stopping: finishing in-flight work (up to %ss)", self.shutdown_timeout)
        finally:
            await self.stop()
