"""kombu is synchronous and nats-py is asyncio: one loop thread per process joins them.

Every transport and result backend of a process shares the loop and, per server URL and
options, one NATS connection. After ``fork`` (Celery's prefork pool) the child starts afresh:
the parent's loop thread does not exist there and its sockets must not be used.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

_T = TypeVar("_T")
log = logging.getLogger("dfcore.contrib.kombu")


class Bridge:
    """A daemon thread running an asyncio loop, and the NATS connections made on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[tuple[Any, ...], Client] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name="dfcore-kombu", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the loop and wait for it (at most ``timeout`` seconds)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("dfcore.contrib.kombu: a blocking call was made on its own loop")
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coro`` on the loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    def connect(self, servers: list[str], **options: Any) -> tuple[Client, JetStreamContext]:
        """The process's connection to ``servers`` with ``options`` (made on first use)."""
        key = (tuple(servers), tuple(sorted((k, repr(v)) for k, v in options.items())))
        with self._lock:
            known = self._connections.get(key)
        if known is None or known.is_closed:
            if threading.current_thread() is self._thread:
                raise nats.errors.ConnectionClosedError  # reconnect from kombu's side
            outage = _Outage(servers)
            wait = 2 * float(options.get("connect_timeout", 2)) + 1
            try:
                known = self.run(
                    nats.connect(
                        servers=servers,
                        error_cb=outage.error,
                        reconnected_cb=outage.over,
                        **options,
                    ),
                    timeout=wait,
                )
            except TimeoutError:
                raise ConnectionError(
                    f"cannot connect to NATS at {', '.join(_safe(s) for s in servers)} within "
                    f"{wait:.0f}s: is nats-server running there, with JetStream (-js), and are "
                    "the URL's user and password right?"
                ) from None
            with self._lock:
                self._connections[key] = known
        return known, known.jetstream()

    def close(self, server: str | None = None) -> None:
        """Drain every connection (at exit), or those to ``server`` only."""
        with self._lock:
            gone = [key for key in self._connections if server is None or server in key[0]]
            connections = [self._connections.pop(key) for key in gone]
        if self._loop is None:
            return
        for client in connections:
            if not client.is_closed:
                try:
                    self.run(client.drain(), timeout=5)
                except Exception:
                    pass

    def forget(self) -> None:
        """In a forked child: drop the parent's loop and connections without touching them."""
        self._lock = threading.Lock()
        self._loop, self._thread, self._connections = None, None, {}


_CONNECTION = (OSError, nats.errors.Error)


def _safe(url: str) -> str:
    """``url`` without its password."""
    scheme, _, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    return f"{scheme}://{auth.partition(':')[0]}:**@{host}" if at else url


class _Outage:
    """nats-py reconnects by itself: say so once per outage, not at every attempt."""

    def __init__(self, servers: list[str]) -> None:
        self.servers = ", ".join(_safe(s) for s in servers)
        self.reported = False

    async def error(self, exc: Exception) -> None:
        if not isinstance(exc, _CONNECTION):
            log.error("NATS client, connected to %s: %r", self.servers, exc)
            return
        if not self.reported:
            log.warning("NATS connection to %s: %r; reconnecting", self.servers, exc)
        self.reported = True

    async def over(self) -> None:
        if self.reported:
            log.warning("NATS connection to %s is back", self.servers)
        self.reported = False


bridge = Bridge()
atexit.register(bridge.close)
os.register_at_fork(after_in_child=bridge.forget)
