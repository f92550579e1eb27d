"""Workers: serve the workflow tasks (``_workflow_tasks``) and activity tasks
(``_activity_tasks``) of an App's task queues, over one connection.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from dfcore.client._client import Client
from dfcore.core._activity import ActivityInfo
from dfcore.core._errors import DFError
from dfcore.core._observe import ObservedGauges, Observers
from dfcore.core._registry import Registry
from dfcore.core._schedules import declared_schedules
from dfcore.jetstream._connection import close_connection, connect
from dfcore.jetstream._naming import check_queue
from dfcore.jetstream._pull import PullConsumer
from dfcore.jetstream._store import Store
from dfcore.jetstream._workers import WorkerResponder, describe_process
from dfcore.worker._activity_tasks import ActivityRunner, pull_expiry
from dfcore.worker._metrics import GAUGES_EVERY, MetricsObserver, observed_queues
from dfcore.worker._partitions import Partitions
from dfcore.worker._prometheus import MetricsRegistry, MetricsServer
from dfcore.worker._schedules import REARM_EVERY, ScheduleRunner, rearm, reconcile
from dfcore.worker._storage import WorkerStore
from dfcore.worker._workflow_tasks import WorkflowProcessor

log = logging.getLogger("dfcore.worker")


class Worker:
    """Serves workflow tasks and/or activity tasks on some task queues.

    Args:
        client: whose settings and codec the worker uses (it opens its own connection).
        registry: the workflows and activities to run.
        activity_contexts: context managers entered around each activity attempt
            (see :meth:`dfcore.App.add_activity_context`).
        task_queues: queues to serve (default: the ``task_queue`` setting).
        workflows: serve workflow tasks.
        activities: serve activity tasks.
        activity_concurrency: max activities at once (default: the setting).
        workflow_concurrency: max workflow tasks at once (default: the setting).
        shutdown_timeout: on stop, how long in-flight work may take before it is handed back.
        metrics_port: serve Prometheus metrics on this port (0: a free one; None: none).
        metrics_host: the address the metrics are served on.
    """

    def __init__(
        self,
        client: Client,
        registry: Registry,
        *,
        activity_contexts: Sequence[Callable[[ActivityInfo], AbstractContextManager[Any]]] = (),
        observers: Observers | None = None,
        task_queues: Sequence[str] | None = None,
        workflows: bool = True,
        activities: bool = True,
        activity_concurrency: int | None = None,
        workflow_concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        if not workflows and not activities:
            raise DFError("a worker must serve workflows, activities, or both")
        settings = client.settings
        self.client = client
        self.registry = registry
        self.activity_contexts = activity_contexts
        self.observers = Observers(list(observers.all) if observers else [])
        self.metrics: MetricsRegistry | None = None
        self._metrics_server: MetricsServer | None = None
        if metrics_port is not None:
            self.metrics = MetricsRegistry()
            self.observers.all.append(MetricsObserver(self.metrics))
            self._metrics_server = MetricsServer(
                self.metrics, self.refresh_gauges, metrics_host, metrics_port
            )
        self.queues = [check_queue(q) for q in (task_queues or [settings.task_queue])]
        self.serve_workflows = workflows
        self.serve_activities = activities
        self.activity_concurrency = activity_concurrency or settings.activity_concurrency
        self.workflow_concurrency = workflow_concurrency or settings.workflow_concurrency
        self.shutdown_timeout = shutdown_timeout
        self.store: WorkerStore | None = None
        self._pullers: list[PullConsumer] = []
        self._activity_runner: ActivityRunner | None = None
        self._processors: list[WorkflowProcessor] = []
        self._partitions: list[Partitions] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._rearmer: asyncio.Task[None] | None = None
        self._gauger: asyncio.Task[None] | None = None
        self.id = secrets.token_hex(6)
        self._started = time.time()
        self._responder: WorkerResponder | None = None

    async def start(self) -> None:
        """Connect, create streams and consumers, and start consuming."""
        settings = self.client.settings
        if self._metrics_server is not None:  # a taken port fails before any work is taken
            await self._metrics_server.start()
        nc = await connect(settings, f"dfcore-worker:{self.client.name}", self)
        self.store = store = Store(nc, settings, self.client.codec)
        await store.ensure()
        lay = store.layout
        for queue in self.queues:
            if self.serve_workflows:
                processor = WorkflowProcessor(self.registry, store, self.observers)
                partitions = Partitions(store, processor, queue, self.workflow_concurrency)
                await partitions.ensure_consumers()
                self._processors.append(processor)
                self._partitions.append(partitions)
            if self.serve_activities:
                name = lay.activity_consumer(queue)
                await store.streams.ensure_consumer(
                    lay.tasks_stream, name, lay.task_subject(queue), settings.activity_ack_wait
                )
                runner = self._activity_runner or ActivityRunner(
                    self.registry, store, self.activity_contexts, self.observers
                )
                self._activity_runner = runner
                expires, heartbeat = pull_expiry(settings.activity_ack_wait)
                self._pullers.append(
                    PullConsumer(
                        nc,
                        lay.tasks_stream,
                        name,
                        runner.handle,
                        max_inflight=self.activity_concurrency,
                        give_back=runner.requeue,
                        expires=expires,
                        idle_heartbeat=heartbeat,
                    )
                )
        if self.serve_workflows:
            await self._serve_schedules(store)
        if self._activity_runner is not None:
            await self._activity_runner.start()
        for puller in self._pullers:
            await puller.start()
        for partitions in self._partitions:
            await partitions.start()
        if self._processors:
            self._sweeper = asyncio.create_task(self._sweep_idle(settings.workflow_ack_wait / 2))
        self._responder = WorkerResponder(nc, lay, self.describe)
        await self._responder.start()
        if self.observers.want_gauges():
            self._gauger = asyncio.create_task(self._report_gauges(GAUGES_EVERY))
        log.info(
            "worker for app %r serving %s on queues %s (NATS %s, namespace %r)",
            self.client.name,
            self._what(),
            ", ".join(self.queues),
            settings.display_url,
            settings.namespace,
        )

    async def _serve_schedules(self, store: Store) -> None:
        """Take the ticks of every schedule (with the other workflow workers), after bringing
        the declared schedules up to date."""
        settings = self.client.settings
        declared = declared_schedules(self.registry.schedules, settings.schedules, self._queue_of)
        lay = store.layout
        await store.streams.ensure_consumer(
            lay.history_stream,
            lay.SCHEDULE_CONSUMER,
            lay.schedule_ticks,
            settings.workflow_ack_wait,
        )
        runner = ScheduleRunner(store, settings.task_queue, self.client.codec, self.observers)
        expires, heartbeat = pull_expiry(settings.workflow_ack_wait)
        self._pullers.append(
            PullConsumer(
                store.nc,
                lay.history_stream,
                lay.SCHEDULE_CONSUMER,
                runner.handle,
                max_inflight=8,
                expires=expires,
                idle_heartbeat=heartbeat,
            )
        )
        try:
            await reconcile(store, declared)
        except DFError as exc:  # the worker still serves; the next one to start tries again
            log.error("cannot bring the declared schedules up to date: %s", exc)
        self._rearmer = asyncio.create_task(self._rearm_schedules(store))

    async def _rearm_schedules(self, store: Store) -> None:
        """Now and then arm any schedule whose next time the server lost (see ``rearm``)."""
        while True:
            await asyncio.sleep(REARM_EVERY)
            try:
                await rearm(store)
            except DFError as exc:
                log.warning("cannot check the schedules are armed: %s", exc)

    def describe(self) -> dict[str, Any]:
        """What this process says of itself when asked (``App.workers()``)."""
        runner = self._activity_runner
        running = [
            (s.info.workflow_id, s.info.activity, s.info.seq, s.info.attempt, s.started)
            for s in (runner.running.values() if runner is not None else ())
        ]
        return describe_process(
            self.id,
            self.client.name,
            _version(),
            self._started,
            self.queues if self.serve_workflows else [],
            self.queues if self.serve_activities else [],
            running,
            sum(processor.live for processor in self._processors),
        )

    def _queue_of(self, workflow: str) -> str:
        defn = self.registry.workflows.get(workflow)
        return (defn.task_queue if defn is not None else None) or self.client.settings.task_queue

    def _what(self) -> str:
        parts = ["workflows"] if self.serve_workflows else []
        return " and ".join(parts + (["activities"] if self.serve_activities else []))

    # -- the connection's listener (``_connection.Listener``) -------------------------------

    def refused(self, subject: str) -> None:
        if self.store is not None:
            self.store.refused(subject)

    def connection_lost(self) -> None:
        if self.store is not None:
            self.store.connection_lost()

    async def reconnected(self) -> None:
        if self.store is not None:
            self.store.reconnected()
        for puller in self._pullers:
            puller.on_reconnected()
        for partitions in self._partitions:
            partitions.on_reconnected()

    async def _sweep_idle(self, every: float) -> None:
        """Now and then evict idle runs (their room goes to deferred starts) and count the
        deferred starts other workers left."""
        while True:
            await asyncio.sleep(every)
            for processor in self._processors:
                processor.sweep_idle()
            for partitions in self._partitions:
                await partitions.count_deferred()

    async def refresh_gauges(self) -> None:
        """Tell the observers this worker's current figures: its queues' backlog and in-flight
        counts (asked of the server) and its cached runs."""
        if self.store is None:
            return
        try:
            stats = await self.store.queue_stats()
        except DFError as exc:
            log.warning("cannot read the queues' figures for the metrics: %s", exc)
            stats = []
        queues = tuple(observed_queues(stats, self.queues))
        cached = dict(zip(self.queues, (p.live for p in self._processors)))
        self.observers.gauges(ObservedGauges(queues, cached))

    async def _report_gauges(self, every: float) -> None:
        while True:
            await self.refresh_gauges()
            await asyncio.sleep(every)

    async def stop(self) -> None:
        """Stop taking work, let in-flight work finish (up to shutdown_timeout), disconnect."""
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        for task in (self._sweeper, self._rearmer, self._gauger):
            if task is not None:
                task.cancel()
        if self._responder is not None:
            await self._responder.stop()
        try:
            await asyncio.gather(
                *(p.stop(self.shutdown_timeout) for p in self._pullers),
                *(p.stop(self.shutdown_timeout) for p in self._partitions),
            )
            if self._activity_runner is not None:
                await self._activity_runner.stop()
        finally:
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
        try:
            await self.start()  # inside: a worker cancelled while starting still disconnects
            await stop.wait()
            log.info("stopping: finishing in-flight work (up to %ss)", self.shutdown_timeout)
        finally:
            await self.stop()


def _version() -> str:
    try:
        return importlib.metadata.version("durablefuture")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
