"""Pulling a queue's messages for a channel, as its prefetch allows.

Our own pull requests rather than nats-py's ``fetch(batch)``: that one, once the first message
has come, waits up to its timeout for the batch to fill, and meanwhile the message's ack wait
runs out; here every message goes on the moment it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js import api

from . import _subjects
from ._errors import PULL_ERRORS

if TYPE_CHECKING:
    from .transport import Channel

log = logging.getLogger("dfcore.contrib.kombu")
PULL_WAIT = 5.0  # seconds one pull request waits for messages


async def pull(channel: Channel, nc: Any, queue: str, no_ack: bool) -> None:
    """Ask the queue's consumer for as many messages as ``channel``'s prefetch allows, one
    pull request at a time, and hand each one to the consuming thread the moment it arrives.

    Each request has a reply subject of its own (``<inbox>.<n>``), so the status that ends a
    request given up on (its connection was lost) is not taken for the current one's. (Its
    messages cannot be told apart: they arrive under their own subjects.)
    """
    asked = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{channel.stream}"
    asked += f".{_subjects.consumer_name(queue)}"
    inbox = nc.new_inbox()
    current = [0, 0]  # the open request's number, and the messages it may still bring
    refused = [""]  # the status that ended it, other than its expiry (408)
    ended = asyncio.Event()

    async def arrived(msg: Msg) -> None:
        status = (msg.headers or {}).get(api.Header.STATUS)
        if status:  # a request expired, or the server cut it short
            if msg.subject == f"{inbox}.{current[0]}":
                left = int((msg.headers or {}).get("Nats-Pending-Messages", current[1]))
                channel._release(min(left, current[1]))
                current[1] = 0
                description = (msg.headers or {}).get("Description", "")
                timeout = status == api.StatusCode.REQUEST_TIMEOUT
                refused[0] = "" if timeout else f"{status} {description}"
                ended.set()
            return
        transport: Any = getattr(channel, "connection", None)
        if transport is None:  # the channel closed meanwhile
            await msg.nak()
            return
        with channel._lock:
            channel._pulled[id(msg)] = msg
        transport._inbox.put((channel, queue, msg, no_ack))
        current[1] -= 1
        if current[1] <= 0:
            ended.set()

    sub = await nc.subscribe(f"{inbox}.*", cb=arrived)
    try:
        while not channel.closed:
            wanted = channel._credit()
            if not wanted:
                channel._wake.clear()
                wanted = channel._credit()  # a settle may have come before the clear
                if not wanted:
                    await channel._wake.wait()
                    continue
            current[0] += 1
            current[1] = wanted
            ended.clear()
            request = {"batch": wanted, "expires": int(PULL_WAIT * 1e9)}
            try:
                await nc.publish(asked, json.dumps(request).encode(), reply=f"{inbox}.{current[0]}")
                await asyncio.wait_for(ended.wait(), PULL_WAIT + 2)
                if refused[0]:  # the consumer is gone, or moving: not in a tight loop
                    log.warning("pulling from queue %r: %s", queue, refused[0])
                    refused[0] = ""
                    await asyncio.sleep(1.0)
            except PULL_ERRORS as exc:  # the request was lost with the connection
                log.debug("pulling %s: %r; asking again", queue, exc)
                channel._release(current[1])
                current[1] = 0
                await asyncio.sleep(0.2)
    finally:
        channel._release(current[1])
        await sub.unsubscribe()
