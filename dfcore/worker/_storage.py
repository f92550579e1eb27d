"""What the worker needs of storage, beyond what the client needs.

:class:`WorkerStore` adds the worker's operations (reading a history's tail, recording an end,
tasks, timers, deferred starts, filing dead letters) to :class:`ClientStore`. The worker's
message delivery is JetStream's own (pull consumers, acks), so the connection and the
consumers' set-up are part of it: ``nc`` and ``streams``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dfcore.client._storage import ClientStore, DeadLetterReader, RunReader
from dfcore.core import _history as h
from dfcore.jetstream._requests import JetStreamAPI
from dfcore.jetstream._streams import Streams


class DeadLetterFiler(DeadLetterReader, Protocol):
    async def keep(
        self,
        source: str,
        subject: str,
        data: bytes,
        reason: str,
        *,
        headers: Mapping[str, str] | None = None,
        stream_seq: int | None = None,
    ) -> None:
        """File a message the engine cannot use, with the reason."""

    async def keep_message(self, source: str, msg: Msg, reason: str) -> None:
        """:meth:`keep` for a message one of the engine's consumers delivered."""


class RunKeeper(RunReader, Protocol):
    async def keep(self, history_subject: str, run: int, records: list[h.Record]) -> None:
        """Keep a run's records readable before the next run's start rolls them up."""


class WorkerStore(ClientStore, Protocol):
    """The storage operations of workflow and activity workers."""

    @property
    def nc(self) -> NATS: ...

    @property
    def streams(self) -> Streams: ...

    @property
    def api(self) -> JetStreamAPI: ...

    @property
    def dlq(self) -> DeadLetterFiler: ...

    @property
    def runs(self) -> RunKeeper: ...

    def encode(self, body: Mapping[str, Any], what: str) -> bytes: ...

    def decode(self, data: bytes, what: str) -> Any: ...

    async def read_recent(
        self, subject: str, after_seq: int, *, walk: int = 16
    ) -> tuple[list[h.Record], int]: ...

    async def mark_ended(
        self, history_subject: str, decision: Mapping[str, Any], seq: int
    ) -> None: ...

    async def purge_timers(self, history_subject: str) -> None: ...

    async def purge_run_timers(self, history_subject: str, run: int) -> None: ...

    async def schedule_timer(
        self, history_subject: str, timer_id: str, fire_at_ms: int, run: int = 1
    ) -> None:
        """Have a TimerFired record (of run ``run``) appended to the history at ``fire_at_ms``."""

    async def publish_task(
        self,
        queue: str,
        body: Mapping[str, Any],
        msg_id: str,
        trace: Mapping[str, str] | None = None,
    ) -> None: ...

    async def requeue(self, subject: str, data: bytes, msg_id: str) -> None: ...

    async def defer_start(self, history_subject: str, seq: int) -> None: ...

    async def start_at(self, history_subject: str, seq: int) -> h.Record | None: ...

    def is_first_record(self, headers: Mapping[str, str] | None, history_subject: str) -> bool: ...
