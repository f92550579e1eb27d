"""Messages a worker holds: handing one back with backoff, and keeping one while it works.

A message handed back (nak) is redelivered after :func:`retry_delay`; one still being worked
on is kept from redelivery by :class:`KeepAlive`, which tells JetStream so every third of the
ack wait.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from dfcore.core._definitions import RetryPolicy

log = logging.getLogger("dfcore.worker")

#: Handing a message back: redelivered after 1, 2, 4 ... 60 seconds.
REDELIVERY_BACKOFF = RetryPolicy(max_attempts=0, initial_interval=1.0, max_interval=60.0)


def retry_delay(num_delivered: int) -> float:
    """Seconds before a handed-back message is delivered again."""
    return REDELIVERY_BACKOFF.delay(num_delivered)


class KeepAlive:
    """Tells JetStream a message is still being worked on, every ``interval`` seconds.

    A workflow task usually takes milliseconds, but one may wait behind others of the same
    workflow, or replay a long history; without this it would be redelivered to a second
    worker after the ack wait. A loop timer, not a task, so the common case costs nothing.
    """

    def __init__(self, msg: Msg, interval: float) -> None:
        self._msg = msg
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._fire)
        self._pending: asyncio.Task[None] | None = None

    def _fire(self) -> None:
        self._pending = self._loop.create_task(self._extend())
        self._timer = self._loop.call_later(self._interval, self._fire)

    async def _extend(self) -> None:
        try:
            await self._msg.in_progress()
        except Exception as exc:
            log.debug("could not extend workflow task %s: %r", self._msg.reply, exc)

    def cancel(self) -> None:
        """Stop; a progress mark already on its way is cancelled too (it must not follow a
        nak with a delay, which it would reset to the full ack wait)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
