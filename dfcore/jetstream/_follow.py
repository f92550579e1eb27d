"""Following a subject of the history stream: a wake-up for each message stored on it.

An ordered consumer that delivers headers only and starts with the next message stored, so
following costs the server one small delivery per append and the follower nothing until it
reads. What was stored is then read the usual way (a batched direct get after the last
sequence read), through the same checks as every other read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from dfcore.jetstream._requests import wrap

log = logging.getLogger("dfcore.store")


class Follower:
    """Wakes :meth:`wait` whenever a message is stored on the subject it follows."""

    def __init__(self) -> None:
        self._stored = asyncio.Event()
        self._sub: Any = None

    @classmethod
    async def start(cls, js: JetStreamContext, stream: str, subject: str) -> Follower:
        follower = cls()
        try:
            follower._sub = await js.subscribe(
                subject,
                stream=stream,
                cb=follower._on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                headers_only=True,
            )
        except Exception as exc:
            raise wrap(exc, f"following {subject}") from exc
        return follower

    async def _on_msg(self, msg: Msg) -> None:
        self._stored.set()

    async def wait(self) -> None:
        """Return once something was stored since the last call returned."""
        await self._stored.wait()
        self._stored.clear()

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is gone already
                log.debug("closing a follower: %s", exc)
