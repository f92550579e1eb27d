"""Connecting to NATS: fail fast with a clear message at start, reconnect forever afterwards."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS

from ._config import Settings
from ._errors import ConnectionError_

log = logging.getLogger("dfcore.connection")


async def connect(
    settings: Settings,
    name: str,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect to the configured NATS server(s).

    Raises:
        ConnectionError_: no server answered; the message names the URL and how to start one.
    """
    urls = settings.servers
    holder: list[NATS] = []

    async def error_cb(exc: Exception) -> None:
        log.debug("NATS connection error: %r", exc)

    async def disconnected_cb() -> None:
        if not holder or holder[0].is_closed or holder[0].is_draining:
            return  # a deliberate close, not an outage
        log.warning("disconnected from NATS at %s; reconnecting", ", ".join(urls))

    async def reconnected_cb() -> None:
        log.warning("reconnected to NATS")
        if on_reconnected is not None:
            await on_reconnected()

    try:
        nc = await nats.connect(
            servers=urls,
            name=name,
            connect_timeout=settings.connect_timeout,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            pending_size=8 * 1024 * 1024,
        )
    except Exception as exc:
        raise ConnectionError_(
            f"could not connect to NATS at {', '.join(urls)} ({type(exc).__name__}: {exc}). "
            "Start a server (for development: `df dev -A yourmodule:app` runs an embedded one "
            "and prints its URL) or point DF_NATS_URL / App(nats_url=...) at a running server."
        ) from exc
    holder.append(nc)
    # Connected: from now on never give up on the server (workers must survive its restarts).
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    return nc


async def close_connection(nc: NATS) -> None:
    """Drain (finish in-flight work) when connected, else just close; never raise."""
    try:
        if nc.is_connected:
            await nc.drain()
            return
    except Exception as exc:
        log.debug("drain failed (%r); closing", exc)
    try:
        await nc.close()
    except Exception as exc:
        log.debug("close failed: %r", exc)
