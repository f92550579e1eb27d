"""What an App reads and watches: workflows, workers, queues and dead letters (the CLI, the
admin pages and the dashboard use these)."""

from __future__ import annotations

from collections.abc import Iterator

from dfcore.client._client import Client
from dfcore.client._handle import WorkflowStatus
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._dlq import DeadLetter
from dfcore.jetstream._index import WorkflowSummary, WorkflowWatch
from dfcore.jetstream._workers import QueueInfo, WorkerInfo


class Inspection:
    """The reading half of :class:`dfcore.App` (it sets ``client``)."""

    client: Client

    async def alist_workflows(self, limit: int = 50) -> list[WorkflowStatus]:
        """The workflows started or changed most recently, newest first, each with its
        status as its history has it (:meth:`awatch_workflows` follows them all)."""
        return await self.client.list_workflows(limit)

    def list_workflows(self, limit: int = 50) -> list[WorkflowStatus]:
        """Sync twin of :meth:`alist_workflows`."""
        return run_sync(self.alist_workflows(limit))

    async def awatch_workflows(self) -> WorkflowWatch:
        """Every workflow's index entry, then each change: ``async for entry in watch``.

        ``await watch.caught_up()`` returns once the entries that existed are delivered;
        ``await watch.close()`` ends it. The dashboard keeps its listings with it.
        """
        return await self.client.watch_workflows()

    def watch_workflows(self) -> Iterator[WorkflowSummary]:
        """Sync twin of :meth:`awatch_workflows`: an iterator that blocks for each change."""
        watch = run_sync(self.client.watch_workflows())
        try:
            while True:
                yield run_sync(watch.__anext__())
        finally:
            run_sync(watch.close())

    async def aworkers(self, window: float = 0.5) -> list[WorkerInfo]:
        """The worker processes of this namespace that answer within ``window`` seconds:
        where they run, their queues, what they are running."""
        return await self.client.workers(window)

    def workers(self, window: float = 0.5) -> list[WorkerInfo]:
        """Sync twin of :meth:`aworkers`."""
        return run_sync(self.aworkers(window))

    async def aqueues(self) -> list[QueueInfo]:
        """Each task queue's backlog and work in flight, from its consumers on the server."""
        return await self.client.queues()

    def queues(self) -> list[QueueInfo]:
        """Sync twin of :meth:`aqueues`."""
        return run_sync(self.aqueues())

    async def adead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest messages workers could not use (oldest of them first), with reasons."""
        return await self.client.dead_letters(limit)

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """Sync twin of :meth:`adead_letters`."""
        return run_sync(self.adead_letters(limit))

    async def adead_letter(self, seq: int) -> DeadLetter:
        """One dead letter by its sequence (as listed by :meth:`adead_letters`).

        Raises:
            DFError: there is no dead letter ``seq`` (it never existed or has expired).
        """
        return await self.client.dead_letter(seq)

    def dead_letter(self, seq: int) -> DeadLetter:
        """Sync twin of :meth:`adead_letter`."""
        return run_sync(self.adead_letter(seq))
