"""What keeps the dashboard current: the mirror of the workflow index, the workers and queues
it asks for every few seconds, and the browsers' event streams it pushes changes to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from dfcore import (
    App,
    CodecKeyError,
    CodecUnavailableError,
    DFError,
    WorkerInfo,
    WorkflowSummary,
    WorkflowWatch,
)

from ._mirror import Mirror
from ._views import queue_json, summary_json, worker_json

log = logging.getLogger("dfcore.dashboard")

POLL_EVERY = 5.0  # seconds between asking the workers and the queues
LOST_AFTER = 3  # asks a worker may miss before it shows as lost
FORGET_AFTER = 600.0  # seconds after which a lost worker is no longer shown
_QUEUE_LIMIT = 5000  # events a browser may fall behind by before its stream is closed


class Live:
    """The dashboard's state, kept current while it runs (one per dashboard process)."""

    def __init__(self, app: App, poll_every: float = POLL_EVERY) -> None:
        self.app = app
        self.mirror = Mirror()
        self.poll_every = poll_every
        self.workers: dict[str, tuple[WorkerInfo, datetime, int]] = {}  # id: info, seen, misses
        self.queues: list[dict[str, Any]] = []
        self.loaded = asyncio.Event()
        self._watch: WorkflowWatch | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[asyncio.Queue[tuple[str, Any]]] = set()
        self._counts_due = False
        self.can_decode = True
        self.closing = asyncio.Event()  # set when the server stops: every event stream ends
        self.mirror.listeners.append(self._on_change)

    async def start(self) -> None:
        self._watch = await self.app.awatch_workflows()
        try:
            await self.app.alist_workflows(1)  # reads a history: does the codec have its key?
        except (CodecKeyError, CodecUnavailableError) as exc:
            self.can_decode = False
            log.warning("dashboard: payloads cannot be decoded here: %s", exc)
        except DFError:
            pass
        self._tasks = [
            asyncio.create_task(self._follow_index(self._watch)),
            asyncio.create_task(self._poll()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch is not None:
            await self._watch.close()

    async def _follow_index(self, watch: WorkflowWatch) -> None:
        if watch.is_caught_up and not watch.pending():
            self._loaded()  # an empty index
        async for entry in watch:
            self.mirror.apply(entry)
            if not self.loaded.is_set() and watch.is_caught_up and not watch.pending():
                self._loaded()

    def _loaded(self) -> None:
        self.loaded.set()
        log.info("dashboard: %d workflows in the index", len(self.mirror))

    def _on_change(self, entry: WorkflowSummary) -> None:
        if not self.loaded.is_set():
            return  # the first load: nobody has a page yet
        self.publish("workflow", summary_json(entry))
        if not self._counts_due:  # counts go out once per loop turn, however many changed
            self._counts_due = True
            asyncio.get_running_loop().call_soon(self._send_counts)

    def _send_counts(self) -> None:
        self._counts_due = False
        self.publish("counts", self.mirror.counts())

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except DFError as exc:
                log.warning("dashboard: cannot read the workers and queues: %s", exc)
            await asyncio.sleep(self.poll_every)

    async def refresh(self) -> None:
        """Ask the workers who is there and the queues what waits, and tell the browsers."""
        answered, queues = await asyncio.gather(self.app.aworkers(), self.app.aqueues())
        now = datetime.now(UTC)
        heard = {worker.id for worker in answered}
        for worker in answered:
            self.workers[worker.id] = (worker, now, 0)
        for worker_id, (info, seen, misses) in list(self.workers.items()):
            if worker_id in heard:
                continue
            if (now - seen).total_seconds() > FORGET_AFTER:
                del self.workers[worker_id]
            else:
                self.workers[worker_id] = (info, seen, misses + 1)
        self.queues = [queue_json(queue) for queue in queues]
        self.publish("workers", {"items": self.workers_json()})
        self.publish("queues", {"items": self.queues})

    def workers_json(self) -> list[dict[str, Any]]:
        return [
            worker_json(info, alive=misses < LOST_AFTER, last_seen=seen)
            for info, seen, misses in sorted(
                self.workers.values(), key=lambda w: (w[0].app, w[0].host, w[0].pid)
            )
        ]

    # -- browsers' event streams --------------------------------------------------------------

    def publish(self, event: str, data: Any) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait((event, data))
            except asyncio.QueueFull:  # a browser that does not keep up starts again
                self._end(queue)  # EventSource reconnects

    def end_streams(self) -> None:
        """End every event stream, as the server stops."""
        self.closing.set()
        for queue in list(self._streams):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._streams.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(("", None))

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(_QUEUE_LIMIT)
        self._streams.add(queue)
        try:
            yield queue
        finally:
            self._streams.discard(queue)
