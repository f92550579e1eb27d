"""The client: one app's connections to NATS (one per event loop), starts, handles, listings.

The async methods are the implementation; sync callers run them on the process's background
loop (see ``_loopthread``). The client knows nothing of workers or of the registry: what to
start arrives as a :class:`PreparedStart`, encoded by the caller.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from dfcore.client._handle import WorkflowHandle, WorkflowStatus
from dfcore.client._inspect import list_workflows
from dfcore.client._loop_client import LoopClient
from dfcore.client._loopthread import SYNC_LOOP, run_sync
from dfcore.client._start import IfExists, PreparedStart, start_fields
from dfcore.client._storage import ClientStore
from dfcore.core._codec import IdentityCodec, PayloadCodec, check_size
from dfcore.core._config import Settings
from dfcore.core._errors import DFError, WorkflowAlreadyStartedError
from dfcore.core._facts import WorkflowStarted
from dfcore.jetstream._dlq import DeadLetter
from dfcore.jetstream._index import WorkflowSummary, WorkflowWatch
from dfcore.jetstream._naming import workflow_token
from dfcore.jetstream._store import HEADROOM, AppendConflict
from dfcore.jetstream._workers import QueueInfo, WorkerInfo

T = TypeVar("T")

log = logging.getLogger("dfcore.client")

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload


class Client:
    """Connections to NATS with one set of settings, and the calls made over them.

    Each event loop that makes calls gets its own connection (a :class:`LoopClient`), opened at
    its first call and shared by every caller on that loop.

    Args:
        settings: where to connect and how.
        name: names the connections in the server's monitoring (``dfcore-client:<name>``).
        codec: the payload codec; default: the one ``settings.codec`` names, or none.
    """

    def __init__(
        self, settings: Settings, *, name: str = "default", codec: PayloadCodec | None = None
    ) -> None:
        self.name = name
        self._settings = settings
        self._codec = codec
        self._loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._loops_are_short_lived = False

    def __repr__(self) -> str:
        return f"<Client {self.name!r} {self._settings.display_url}>"

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def codec(self) -> PayloadCodec:
        if self._codec is None:
            self._codec = self._settings.load_codec() or IdentityCodec()
        return self._codec

    def reconfigure(self, settings: Settings, codec: PayloadCodec | None = None) -> None:
        """Use other settings from now on: every connection closes, the next call reconnects."""
        self._settings, self._codec = settings, codec
        self.drop_connections()

    @property
    def max_payload(self) -> int:
        """The connected server's max_payload, or the NATS default before any connection."""
        for client in list(self._loop_clients.values()):
            if client.nc is not None:
                return int(client.nc.max_payload)
        return DEFAULT_MAX_PAYLOAD

    # -- connections per event loop ---------------------------------------------------------

    def loop_client(self) -> LoopClient:
        """The running loop's connection (made now if it has none)."""
        loop = asyncio.get_running_loop()
        client = self._loop_clients.get(loop)
        if client is None:
            client = self._loop_clients[loop] = LoopClient(self)
            client.watch_loop()  # a short-lived loop drops its client when it ends
        return client

    async def store(self) -> ClientStore:
        """The running loop's store, connected (see :meth:`LoopClient.store`)."""
        return await self.loop_client().store()

    async def call(
        self, call: Callable[[LoopClient], Awaitable[T]], action: str | None, note: str = ""
    ) -> T:
        """Run ``call(client)`` with this loop's connection, or on the shared sync loop.

        With an ``action`` (what the call does, for the error), the call is given up with
        :class:`DFConnectionError` after ``connect_timeout`` seconds (``LoopClient.bounded``).

        Async calls use a connection on the caller's loop, which suits long-lived loops (an
        ASGI server, a worker). Once a loop that held a connection has ended, this process
        runs loops per call (``asyncio.run`` in a script, asgiref's ``async_to_sync`` for an
        async Django view under WSGI); from then on, a new loop borrows the shared
        connection of the sync loop instead of opening one per call.
        """

        async def run() -> T:
            client = self.loop_client()
            if action is None:
                return await call(client)
            return await client.bounded(call, action, note)

        loop = asyncio.get_running_loop()
        if not self._loops_are_short_lived or loop in self._loop_clients or SYNC_LOOP.owns(loop):
            return await run()

        future = asyncio.run_coroutine_threadsafe(run(), SYNC_LOOP.loop)
        return await asyncio.wrap_future(future)

    def _loop_ended(self, loop: asyncio.AbstractEventLoop, client: LoopClient) -> None:
        if self._loop_clients.get(loop) is client:
            del self._loop_clients[loop]
        self._loops_are_short_lived = True

    def drop_connections(self) -> None:
        """Close every loop's connection without waiting (the next call reconnects)."""
        for loop, client in list(self._loop_clients.items()):
            del self._loop_clients[loop]
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(client.close())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(client.close(), loop)

    async def aclose(self) -> None:
        """Close this loop's connection (sync callers' connection closes at exit)."""
        client = self._loop_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the sync callers' connection now rather than at exit (the next call reopens it)."""
        run_sync(self.aclose())

    # -- workflows --------------------------------------------------------------------------

    def get_handle(self, workflow_id: str, *, result_hint: Any = None) -> WorkflowHandle[Any]:
        """A handle to the workflow with this id; ``result_hint`` types its result."""
        return WorkflowHandle(self, workflow_id, result_hint=result_hint)

    async def start(
        self, start: PreparedStart, *, if_exists: IfExists = "use_existing", result_hint: Any = None
    ) -> WorkflowHandle[Any]:
        """Append a prepared start record; a second start of the same id starts nothing.

        Raises:
            WorkflowAlreadyStartedError: the id is taken and ``if_exists`` is ``"fail"``.
            DFConnectionError: NATS did not answer within ``connect_timeout``; the workflow
                may or may not have started.
        """
        subject = await self.call(
            lambda client: self._append_start(client, start, if_exists),
            f"start workflow {start.workflow_id!r}",
            "It may or may not have started: starting it again with the same workflow_id is "
            "safe (it runs once). ",
        )
        return WorkflowHandle(self, start.workflow_id, subject=subject, result_hint=result_hint)

    async def _append_start(
        self, client: LoopClient, start: PreparedStart, if_exists: IfExists
    ) -> str:
        return await append_start(await client.store(), start, if_exists)

    async def list_workflows(self, limit: int = 50) -> list[WorkflowStatus]:
        """The most recently active workflows, newest first."""

        async def run(client: LoopClient) -> list[WorkflowStatus]:
            return await list_workflows(await client.store(), limit)

        return await self.call(run, "list workflows")

    async def watch_workflows(self) -> WorkflowWatch:
        """The current index entry of every workflow, then each change as it is written.

        Use it on a long-lived event loop (it holds a subscription on this loop's
        connection), and close it when done.
        """

        async def run(client: LoopClient) -> WorkflowWatch:
            return await (await client.store()).index.watch()

        return await self.call(run, "watch workflows")

    # -- workers and queues -----------------------------------------------------------------

    async def workers(self, window: float = 0.5) -> list[WorkerInfo]:
        """The worker processes that describe themselves within ``window`` seconds."""

        async def run(client: LoopClient) -> list[WorkerInfo]:
            return await (await client.store()).ask_workers(window)

        return await self.call(run, "ask the workers")

    async def queues(self) -> list[QueueInfo]:
        """Backlog and in-flight counts of every task queue with consumers."""

        async def run(client: LoopClient) -> list[QueueInfo]:
            return await (await client.store()).queue_stats()

        return await self.call(run, "read the queues")

    # -- dead letters -----------------------------------------------------------------------

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest messages workers could not use (oldest of them first), with reasons."""

        async def run(client: LoopClient) -> list[DeadLetter]:
            return await (await client.store()).dlq.newest(limit)

        return await self.call(run, "list dead letters")

    async def dead_letter(self, seq: int) -> DeadLetter:
        """One dead letter by its sequence.

        Raises:
            DFError: there is no dead letter ``seq`` (it never existed or has expired).
        """

        async def run(client: LoopClient) -> DeadLetter:
            store = await client.store()
            letter = await store.dlq.at(seq)
            if letter is None:
                raise DFError(
                    f"there is no dead letter {seq} in {store.layout.dlq_stream}; "
                    f"{self._settings.advice.run('dlq list')} shows the ones kept"
                )
            return letter

        return await self.call(run, f"read dead letter {seq}")


async def append_start(store: ClientStore, start: PreparedStart, if_exists: IfExists) -> str:
    """Append a prepared start; the subject of the workflow's history (its own, or the one
    already there when the id is taken and ``if_exists`` is ``"use_existing"``)."""
    check_size(len(start.data) + HEADROOM, store.max_payload, start.what)
    lay = store.layout
    subject = lay.history_subject(start.task_queue, start.workflow_id)
    token = workflow_token(start.workflow_id)
    entry = WorkflowSummary(
        start.workflow_id,
        start.task_queue,
        "running",
        workflow_type=start.workflow_type,
        started_at=datetime.now(UTC),
    )
    # The index entry goes with the start, on one round trip (it never replaces a later one).
    appended, indexed = await asyncio.gather(
        store.append(
            subject,
            {"t": WorkflowStarted.type},  # for the header: the record is start.data
            msg_id=f"{token}:start" if if_exists == "use_existing" else None,
            expected_seq=0,
            expected_subject=lay.history_any_queue(start.workflow_id),
            data=start.data,
            trace=start.trace,
        ),
        store.index.write(entry, first=True),
        return_exceptions=True,
    )
    if isinstance(indexed, Exception) and not isinstance(appended, BaseException):
        log.warning(
            "workflow %r started, but is not listed until it ends: %s",
            start.workflow_id,
            indexed,
            extra=start_fields(start),
        )
    if isinstance(appended, AppendConflict):
        started = await store.started_subject(start.workflow_id)
        if started is None:
            try:
                await store.index.withdraw(entry, "not started: its history holds a stray message")
            except DFError as exc:
                log.warning(
                    "cannot withdraw the index entry of %r: %s",
                    start.workflow_id,
                    exc,
                    extra=start_fields(start),
                )
            raise DFError(
                f"workflow {start.workflow_id!r} was not started: its history already holds "
                "a message that is not a workflow start (stray or forged; "
                f"{store.settings.advice.run('dlq list')} shows it once a worker has seen "
                "it), so nothing would run it. Start it "
                "under another id, and see docs/security.md on who may publish."
            ) from None
        if if_exists == "fail":
            raise WorkflowAlreadyStartedError(start.workflow_id) from None
        subject = started
    elif isinstance(appended, BaseException):
        raise appended
    return subject
