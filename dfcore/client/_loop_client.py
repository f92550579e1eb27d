"""One event loop's connection to NATS, and the circuit breaker of the calls made on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from nats.aio.client import Client as NATS

from dfcore.client._loopthread import SYNC_LOOP
from dfcore.client._storage import ClientStore
from dfcore.core import _history as h
from dfcore.core._codec import PayloadCodec
from dfcore.core._config import Settings
from dfcore.core._errors import DFConnectionError
from dfcore.jetstream._connection import close_connection, connect, is_unreachable
from dfcore.jetstream._outcomes import OutcomeWatcher
from dfcore.jetstream._store import Store

T = TypeVar("T")


class Owner(Protocol):
    """What a loop client reads of the :class:`dfcore.client.Client` that made it."""

    name: str

    @property
    def settings(self) -> Settings: ...

    @property
    def codec(self) -> PayloadCodec: ...

    def _loop_ended(self, loop: asyncio.AbstractEventLoop, client: LoopClient) -> None: ...


class LoopClient:
    """A client's connection and store on one event loop (made lazily, shared by callers).

    It is also the circuit breaker of the calls made through it. While NATS is unreachable a
    call waits at most ``connect_timeout`` seconds for it, counted from when the outage began,
    so once an outage has lasted that long every call fails at once with
    :class:`DFConnectionError`, and calls go through again as soon as the server is back:
    nats-py reconnects a dropped connection in the background, a first connect that failed is
    retried in the background every :attr:`RETRY_INTERVAL` seconds, and a server that keeps
    the connection open but stopped answering (a frozen process) is pinged as often.
    """

    RETRY_INTERVAL = 1.0
    """Seconds between background attempts at a first connect that failed, and between pings
    of a server that stopped answering."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self._store: Store | None = None
        self._opening: Store | None = None  # made, not yet ready: refusals still reach it
        self._outcomes: OutcomeWatcher | None = None
        self._guard: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[Store] | None = None
        self._failure: DFConnectionError | None = None  # why the last first connect failed
        self._down_since: float | None = None  # loop time the connection dropped
        self._up = asyncio.Event()
        self._silent_since: float | None = None  # loop time a call began that got no answer
        self._pinging: asyncio.Task[None] | None = None

    async def store(self) -> ClientStore:
        """The store, connected.

        Raises:
            DFConnectionError: NATS cannot be reached (see the class docstring for how long
                this waits).
        """
        store = self._store
        if store is not None and store.nc.is_connected:
            if self._silent_since is not None:
                self._check_silence()
            return store
        if store is not None:
            return await self._reconnected(store)
        if self._failure is not None and self._connecting is not None:
            raise DFConnectionError(f"{self._failure} [{_FAILING_FAST}]")
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(_consume)
        # Shielded: a caller that gives up does not abort the connect the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> Store:
        try:
            store = await self._open()
        except DFConnectionError as exc:
            self._connecting, self._failure = None, exc
            if is_unreachable(exc):  # a refused login or TLS handshake is not retried
                self._retry_in_background()
            raise
        except BaseException:
            self._connecting = None
            raise
        self._connecting, self._store, self._failure = None, store, None
        self._up.set()
        self._outcomes = OutcomeWatcher(store)
        return store

    async def _open(self) -> Store:
        settings = self.owner.settings
        nc = await connect(settings, f"dfcore-client:{self.owner.name}", self)
        store = self._opening = Store(nc, settings, self.owner.codec)
        try:
            await store.ensure()
        except BaseException:
            await close_connection(nc)
            raise
        finally:
            self._opening = None
        return store

    def _retry_in_background(self) -> None:
        if self._connecting is not None or self._store is not None:
            return

        async def retry() -> Store:
            await asyncio.sleep(self.RETRY_INTERVAL)
            return await self._connect()

        self._connecting = task = asyncio.get_running_loop().create_task(retry())
        task.add_done_callback(_consume)

    async def _reconnected(self, store: Store) -> Store:
        """Wait for a dropped connection to come back, within the outage's time."""
        loop = asyncio.get_running_loop()
        if self._down_since is None:  # dropped, and nats-py has not told us yet
            self._down_since = loop.time()
            self._up.clear()
        left = self._down_since + self.owner.settings.connect_timeout - loop.time()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._up.wait()
        if store.nc.is_connected:
            return store
        raise DFConnectionError(
            f"NATS at {self.owner.settings.display_url} is unreachable: the connection dropped "
            f"{loop.time() - self._down_since:.1f}s ago and has not come back "
            f"[{_FAILING_FAST}]. {_UNREACHABLE_HINT}"
        )

    def _check_silence(self) -> None:
        """Fail at once if the connected server has not answered for ``connect_timeout``."""
        assert self._silent_since is not None
        settings = self.owner.settings
        silent_for = asyncio.get_running_loop().time() - self._silent_since
        if silent_for >= settings.connect_timeout:
            raise DFConnectionError(
                f"NATS at {settings.display_url} is not answering: the connection is open, "
                f"but nothing has come back for {silent_for:.1f}s [{_FAILING_FAST}]. "
                f"{_UNREACHABLE_HINT}"
            )

    def _went_silent(self, since: float) -> None:
        """A call got no answer while connected: ping until the server answers again."""
        store = self._store
        if store is None or not store.nc.is_connected:
            return  # a dropped connection has its own wait (``_reconnected``)
        if self._silent_since is None:
            self._silent_since = since
        if self._pinging is not None:
            return

        async def ping() -> None:
            timeout = self.owner.settings.connect_timeout
            while self._silent_since is not None:
                try:
                    await store.nc.flush(timeout=timeout)  # type: ignore[arg-type]  # float works
                except Exception:
                    await asyncio.sleep(self.RETRY_INTERVAL)
                else:
                    self._silent_since = None
            self._pinging = None

        self._pinging = asyncio.get_running_loop().create_task(ping())
        self._pinging.add_done_callback(_consume)

    async def bounded(
        self, call: Callable[[LoopClient], Awaitable[T]], action: str, note: str = ""
    ) -> T:
        """``call(self)``, given up with DFConnectionError after ``connect_timeout`` seconds.

        Args:
            action: what the call does, for the message (``"signal workflow 'order-7'"``).
            note: what the caller should know when it was given up (whether to retry).
        """
        settings = self.owner.settings
        began = asyncio.get_running_loop().time()
        timer = asyncio.timeout(settings.connect_timeout)
        try:
            async with timer:
                return await call(self)
        except TimeoutError:
            if not timer.expired():
                raise
            self._went_silent(began)
            raise DFConnectionError(
                f"could not {action}: no answer from NATS at {settings.display_url} within "
                f"{settings.connect_timeout}s (the connect_timeout). {note}{_UNREACHABLE_HINT}"
            ) from None

    def watch_loop(self) -> None:
        """Close the connection when its event loop shuts down.

        ``asyncio.run`` (and asgiref's ``async_to_sync``) cancel the tasks left on a loop
        before closing it; this task uses that moment to close the connection, so a loop
        per call does not leak a connection per call. The sync API's own loop lives as long as
        the process and is closed at exit.
        """
        loop = asyncio.get_running_loop()
        if SYNC_LOOP.owns(loop):
            return

        async def guard() -> None:
            try:
                await loop.create_future()  # until cancelled
            except asyncio.CancelledError:
                self.owner._loop_ended(loop, self)
                await self.close()
                raise

        self._guard = loop.create_task(guard(), name="dfcore-connection-guard")

    # -- the connection's listener (``_connection.Listener``) -------------------------------

    def refused(self, subject: str) -> None:
        store = self._store or self._opening
        if store is not None:
            store.refused(subject)

    def connection_lost(self) -> None:
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
        self._up.clear()
        if self._store is not None:
            self._store.connection_lost()

    async def reconnected(self) -> None:
        self._down_since = self._silent_since = None
        self._up.set()
        if self._store is not None:
            self._store.reconnected()
        if self._outcomes is not None:
            self._outcomes.recheck_all()  # outcomes published meanwhile were not delivered

    async def outcome(self, history_subject: str) -> h.Record:
        """Wait for the record that ended the workflow of ``history_subject``."""
        store = await self.store()
        assert self._outcomes is not None
        return await self._outcomes.wait(store.layout.status_for(history_subject))

    @property
    def nc(self) -> NATS | None:
        return self._store.nc if self._store else None

    async def close(self) -> None:
        for task in (self._connecting, self._pinging):
            if task is not None:
                task.cancel()
        self._connecting = self._pinging = None
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
        outcomes, self._outcomes = self._outcomes, None
        if outcomes is not None:
            await outcomes.close()
        if self._store is not None:
            nc, self._store = self._store.nc, None
            await close_connection(nc)


_FAILING_FAST = "calls fail at once until it answers again"
_UNREACHABLE_HINT = "Check that the NATS server is running and reachable from this process."


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a background connect's error: its callers were told, or none is waiting."""
    if not task.cancelled():
        task.exception()
