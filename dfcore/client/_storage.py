"""What the client needs of storage: the operations on histories, outcomes and dead letters.

The client layer is written against :class:`ClientStore`, not against the JetStream store that
implements it (``dfcore.jetstream._store.Store``, built in one place: ``_loop_client``). A
history is named by its subject (``dfcore.jetstream._naming.Layout`` derives them); records are
:class:`dfcore.core._history.Record` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from dfcore.core import _history as h
from dfcore.core._config import Settings
from dfcore.jetstream._dlq import DeadLetter
from dfcore.jetstream._follow import Follower
from dfcore.jetstream._index import WorkflowIndex
from dfcore.jetstream._naming import Layout
from dfcore.jetstream._schedules import ScheduleRecords
from dfcore.jetstream._workers import QueueInfo, WorkerInfo


class DeadLetterReader(Protocol):
    async def newest(self, limit: int = 50) -> list[DeadLetter]: ...

    async def at(self, seq: int) -> DeadLetter | None: ...


class RunReader(Protocol):
    async def load(self, history_subject: str, run: int) -> list[h.Record] | None:
        """The records of an earlier run of a workflow that continued as new, if kept."""


class ClientStore(Protocol):
    """The storage operations of starts, handles and listings."""

    @property
    def settings(self) -> Settings: ...

    @property
    def layout(self) -> Layout: ...

    @property
    def dlq(self) -> DeadLetterReader: ...

    @property
    def schedules(self) -> ScheduleRecords: ...

    @property
    def runs(self) -> RunReader: ...

    @property
    def index(self) -> WorkflowIndex:
        """The workflow index (listings)."""

    @property
    def max_payload(self) -> int:
        """The largest message the server takes, in bytes."""

    async def ensure(self) -> None:
        """Make the namespace ready (idempotent)."""

    def refused(self, subject: str) -> None:
        """The server refused this connection permission to publish to ``subject``."""

    def connection_lost(self) -> None: ...

    def reconnected(self) -> None: ...

    async def append(
        self,
        subject: str,
        body: Mapping[str, Any],
        *,
        msg_id: str | None,
        expected_seq: int | None = None,
        expected_subject: str | None = None,
        status: str | None = None,
        data: bytes | None = None,
        rollup: bool = False,
        trace: Mapping[str, str] | None = None,
    ) -> int:
        """Append one record; its stream sequence (``AppendConflict`` if an expectation fails).

        ``rollup``: every earlier record of the subject is deleted as it is stored."""

    async def append_fact(
        self, subject: str, body: Mapping[str, Any], *, msg_id: str | None, after_seq: int
    ) -> int:
        """Append a fact (signal, cancel, activity outcome) to a history that exists."""

    async def last_seq(self, subject: str) -> int: ...

    async def read(self, subject: str, after_seq: int = 0) -> tuple[list[h.Record], int]:
        """The records after ``after_seq`` and the last sequence read, unreadable ones too."""

    async def load(self, subject: str, after_seq: int = 0) -> list[h.Record]: ...

    async def first(self, subject: str) -> h.Record | None: ...

    async def last(self, subject: str) -> tuple[str, h.Record] | None: ...

    async def last_subject(self, subject_filter: str) -> str | None: ...

    async def last_readable(self, subject: str) -> h.Record | None: ...

    async def last_many(self, subjects: list[str]) -> list[tuple[str, h.Record]]: ...

    async def outcome(self, history_subject: str) -> h.Record | None: ...

    async def verified_outcome(
        self, status_subject: str, candidate: h.Record | None
    ) -> h.Record | None: ...

    async def history_subjects(self) -> list[str]: ...

    async def follow(self, subject: str) -> Follower:
        """A wake-up for each message stored on ``subject`` from now on."""

    async def ask_workers(self, window: float) -> list[WorkerInfo]:
        """The worker processes that describe themselves within ``window`` seconds."""

    async def queue_stats(self) -> list[QueueInfo]:
        """Backlog and in-flight counts of each task queue."""

    async def started_subject(self, workflow_id: str) -> str | None: ...
