"""Who is working: worker processes answer when asked, and queues say what waits on them.

Workers do not announce themselves on a timer. Each worker process subscribes (core NATS,
nothing stored) to ``<ns>.ctl.workers``; whoever wants to know (the dashboard,
``App.workers()``) publishes one request there and collects the answers that come to
``<ns>.ctl.reply.<random>`` within a short window. So the cost is nothing while nobody asks,
and one small message per worker per ask. A worker that stops gracefully answers no more; one
that is killed simply stops answering, and the asker, which keeps when it last heard from each,
shows it as lost.

Queue figures come from the consumers' own state on the server (one consumer list request
per stream): the backlog is what the consumers have not delivered, in flight what they
delivered and wait to hear back about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from dfcore.jetstream._naming import Layout
from dfcore.jetstream._requests import wrap

log = logging.getLogger("dfcore.store")

MAX_LISTED = 50  # activities listed per worker in an answer (all are counted)


@dataclass(frozen=True)
class RunningActivity:
    """An activity attempt a worker is running."""

    workflow_id: str
    activity: str
    seq: int
    attempt: int
    since: datetime | None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process, as it described itself when asked (:meth:`dfcore.App.workers`).

    Attributes:
        id: the process's id (its heartbeats and pins use it too).
        app: the name of the App it serves.
        host, pid: where it runs.
        version: the durablefuture version it runs.
        started_at: when it started.
        workflow_queues: the queues whose workflows it serves.
        activity_queues: the queues whose activities it serves.
        running: activity attempts it is running (up to 50 are listed).
        running_count: how many activity attempts it is running.
        cached_workflows: workflow runs it holds in its cache.
        seen_at: when it answered.
    """

    id: str
    app: str
    host: str
    pid: int
    version: str
    started_at: datetime | None
    workflow_queues: tuple[str, ...]
    activity_queues: tuple[str, ...]
    running: tuple[RunningActivity, ...]
    running_count: int
    cached_workflows: int
    seen_at: datetime


@dataclass(frozen=True)
class QueueInfo:
    """What waits on a task queue, from its consumers on the server (:meth:`dfcore.App.queues`).

    Attributes:
        name: the queue.
        activity_backlog: activity tasks not yet delivered to a worker.
        activity_in_flight: activity tasks delivered and not yet acknowledged (running).
        workflow_backlog: workflow tasks (history appends) not yet delivered.
        workflow_in_flight: workflow tasks delivered and being decided.
        starts_waiting: starts waiting for room in a busy worker's cache (see "Bursts" in
            docs/architecture.md).
    """

    name: str
    activity_backlog: int = 0
    activity_in_flight: int = 0
    workflow_backlog: int = 0
    workflow_in_flight: int = 0
    starts_waiting: int = 0


class WorkerResponder:
    """Answers ``<ns>.ctl.workers`` for one worker process with ``describe()``."""

    def __init__(self, nc: NATS, layout: Layout, describe: Callable[[], Mapping[str, Any]]):
        self._nc = nc
        self._subject = layout.workers_ask
        self._describe = describe
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_ask)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("cannot unsubscribe from %s: %s", self._subject, exc)

    async def _on_ask(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, orjson.dumps(dict(self._describe())))
        except nats.errors.Error as exc:
            log.debug("cannot answer %s: %s", self._subject, exc)


def describe_process(
    member_id: str,
    app: str,
    version: str,
    started: float,
    workflow_queues: list[str],
    activity_queues: list[str],
    running: list[tuple[str, str, int, int, float]],
    cached: int,
) -> dict[str, Any]:
    """A worker's answer; ``running``: ``(workflow_id, activity, seq, attempt, since)``."""
    return {
        "id": member_id,
        "app": app,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": version,
        "started": int(started * 1000),
        "wq": workflow_queues,
        "aq": activity_queues,
        "running": [
            {"wf": wf, "act": act, "seq": seq, "attempt": attempt, "since": int(since * 1000)}
            for wf, act, seq, attempt, since in running[:MAX_LISTED]
        ],
        "n_running": len(running),
        "cached": cached,
    }


async def ask_workers(nc: NATS, layout: Layout, window: float) -> list[WorkerInfo]:
    """Every worker process that answers within ``window`` seconds, by id."""
    # Answers come back in the namespace, where workers may publish (not to an _INBOX).
    inbox = f"{layout.workers_reply}.{secrets.token_hex(8)}"
    answers: list[Msg] = []
    sub = await nc.subscribe(inbox, cb=_collect(answers))
    try:
        await nc.publish(layout.workers_ask, b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(window)  # answers come from an unknown number of workers
    except nats.errors.Error as exc:
        raise wrap(exc, "asking the workers") from exc
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass
    found: dict[str, WorkerInfo] = {}
    for msg in answers:
        info = _worker_info(msg.data)
        if info is not None:
            found[info.id] = info
    return sorted(found.values(), key=lambda w: (w.app, w.host, w.pid))


def _collect(answers: list[Msg]) -> Callable[[Msg], Any]:
    async def on_msg(msg: Msg) -> None:
        answers.append(msg)

    return on_msg


def _worker_info(data: bytes) -> WorkerInfo | None:
    """An answer, or None (logged) when it is not one: anyone may answer."""
    try:
        body = orjson.loads(data)
        running = tuple(
            RunningActivity(
                str(r["wf"]), str(r["act"]), int(r["seq"]), int(r["attempt"]), _when(r["since"])
            )
            for r in body.get("running", [])
        )
        return WorkerInfo(
            id=str(body["id"])[:64],
            app=str(body.get("app", "")),
            host=str(body.get("host", "")),
            pid=int(body.get("pid", 0)),
            version=str(body.get("version", "")),
            started_at=_when(body.get("started")),
            workflow_queues=tuple(str(q) for q in body.get("wq", [])),
            activity_queues=tuple(str(q) for q in body.get("aq", [])),
            running=running,
            running_count=int(body.get("n_running", len(running))),
            cached_workflows=int(body.get("cached", 0)),
            seen_at=datetime.now(UTC),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("ignoring a malformed answer from a worker: %s", exc)
        return None


async def queue_stats(js: JetStreamContext, layout: Layout) -> list[QueueInfo]:
    """Backlog and in-flight counts of every task queue that has consumers, by name."""
    figures: dict[str, dict[str, int]] = {}
    for stream in (layout.history_stream, layout.tasks_stream):
        try:
            consumers = await js.consumers_info(stream)
        except Exception as exc:
            raise wrap(exc, "reading the queues' consumers") from exc
        for consumer in consumers:
            kind, queue = _queue_of(layout, consumer.config.filter_subject or "")
            if kind is None:
                continue
            counts = figures.setdefault(queue, {})
            pending, acking = consumer.num_pending or 0, consumer.num_ack_pending or 0
            if kind == "starts_waiting":
                counts[kind] = counts.get(kind, 0) + pending + acking
                continue
            backlog, in_flight = f"{kind}_backlog", f"{kind}_in_flight"
            counts[backlog] = counts.get(backlog, 0) + pending
            counts[in_flight] = counts.get(in_flight, 0) + acking
    return [QueueInfo(name, **counts) for name, counts in sorted(figures.items())]


def _queue_of(layout: Layout, filter_subject: str) -> tuple[str | None, str]:
    """What a consumer's filter makes it (``"workflow"``, ``"activity"``, ``"starts_waiting"``)
    and of which queue."""
    parts = filter_subject.split(".")
    if len(parts) < 3 or parts[0] != layout.namespace:
        return None, ""
    kinds = {"history": "workflow", "task": "activity", "admit": "starts_waiting"}
    return kinds.get(parts[1]), parts[2]


def _when(ms: Any) -> datetime | None:
    try:
        value = int(ms)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value > 0 else None
