"""The workflow index: one small entry per workflow, for listings that scale.

Listing workflows by reading the history stream's subjects stops working at about 100,000
subjects (the server caps what one stream info lists), and it cannot filter or count. So each
workflow also has one message on ``<ns>.index.<queue>.<wf>``, in the history stream: its type,
status, run and times. The message is replaced (``Nats-Rollup: sub``) whenever the status
changes, so the subject always holds one entry, and the server can hand out the current entry of
every workflow (an ordered consumer with ``deliver_policy=last_per_subject``), then every change
as it happens, without anything else being read.

Who writes what:

- the client that starts a workflow (and the worker starting a child), with its start: the
  entry is sent right after the start on the same connection, with
  ``Nats-Expected-Last-Subject-Sequence: 0``, so it never replaces a later one;
- the worker that notes a failing workflow task, and the one whose next decision gets past it;
- the worker that continues a workflow as new (the run number);
- the worker that carries out a workflow's final decision, with the status record. That entry
  expires after ``history_retention``, with the history.

The index is for people. The engine never reads it, and :meth:`Client.list_workflows` checks
each status it lists against the workflow's history (the entry picks which workflows to list).
Its body goes through the payload codec like every other record: the workflow type is as private
as the history. ``Df-Status`` and ``Df-Started`` headers keep the status and start time readable
without the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from dfcore.core import _history as h
from dfcore.core._errors import PayloadError
from dfcore.jetstream._naming import Layout, workflow_token
from dfcore.jetstream._requests import AppendConflict, JetStreamAPI, wrap

log = logging.getLogger("dfcore.store")

INDEXED = "Indexed"  # the record type of index entries (never in a history)
HDR_STARTED = "Df-Started"
STATUSES = ("running", "failing", "completed", "failed", "cancelled", "timed_out")


@dataclass(frozen=True)
class WorkflowSummary:
    """A workflow's entry in listings (:meth:`dfcore.App.watch_workflows`).

    Attributes:
        workflow_id: its id.
        task_queue: the queue its workflow tasks go to.
        status: ``"running"``, ``"failing"`` (its code raises; the step is retried),
            ``"completed"``, ``"failed"``, ``"cancelled"`` or ``"timed_out"``.
        workflow_type: its workflow's name; None when the entry is encrypted and this process
            lacks the key.
        run: its current run (2 and on once it continued as new).
        started_at: when its first run started.
        ended_at: when it ended, once it has.
        parent_id: the workflow that started it as a child.
        schedule_id: the schedule that started it.
        failure: ``"Type: message"`` of the error that ended it, or keeps recurring.
        seq: the entry's stream sequence: a later one is a newer state of the workflow.
    """

    workflow_id: str
    task_queue: str
    status: str
    workflow_type: str | None = None
    run: int = 1
    started_at: datetime | None = None
    ended_at: datetime | None = None
    parent_id: str | None = None
    schedule_id: str | None = None
    failure: str | None = None
    seq: int = 0

    @property
    def ended(self) -> bool:
        return self.status not in ("running", "failing")

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"t": INDEXED, "wf": self.workflow_type, "st": self.status}
        if self.run != 1:
            body["run"] = self.run
        for key, value in (
            ("t0", _ms(self.started_at)),
            ("t1", _ms(self.ended_at)),
            ("parent", self.parent_id),
            ("sched", self.schedule_id),
            ("failure", self.failure),
        ):
            if value is not None:
                body[key] = value
        return body


def summary_of(
    workflow_id: str, queue: str, body: Mapping[str, Any] | None, headers: Mapping[str, str]
) -> WorkflowSummary:
    """An entry from its decoded body (None: it could not be decoded) and its headers.

    Raises:
        ValueError: the entry is malformed (someone else wrote it).
    """
    status = headers.get(h.HDR_STATUS, "")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    started = _when(headers.get(HDR_STARTED))
    seq = int(headers.get("Nats-Sequence", 0) or 0)
    if body is None:
        return WorkflowSummary(workflow_id, queue, status, started_at=started, seq=seq)
    if body.get("t") != INDEXED or body.get("st") != status:
        raise ValueError("not an index entry")
    return WorkflowSummary(
        workflow_id,
        queue,
        status,
        workflow_type=_text(body.get("wf")),
        run=_count(body.get("run", 1)),
        started_at=_when(body.get("t0")) or started,
        ended_at=_when(body.get("t1")),
        parent_id=_text(body.get("parent")),
        schedule_id=_text(body.get("sched")),
        failure=_text(body.get("failure")),
        seq=seq,
    )


def read_entry(
    msg: Msg, layout: Layout, decode: Callable[[bytes, str], Any]
) -> WorkflowSummary | None:
    """The entry a stored index message holds, or None (logged) when it is not one."""
    headers = dict(msg.headers or {})
    subject = headers.get("Nats-Subject") or msg.subject
    if "Nats-Sequence" not in headers:  # delivered by a consumer, not read by a direct get
        headers["Nats-Sequence"] = str(msg.metadata.sequence.stream)
    try:
        queue, workflow_id = layout.parse_index_subject(subject)
        try:
            body = decode(msg.data, f"index entry of {workflow_id!r}")
        except PayloadError:  # CodecKeyError included: no key here, the headers still say
            body = None
        return summary_of(workflow_id, queue, body, headers)
    except (ValueError, TypeError) as exc:
        log.debug("skipping index message on %s: %s", subject, exc)
        return None


def entry_headers(entry: WorkflowSummary, *, first: bool, ttl: float | None) -> dict[str, str]:
    """The headers of an entry's message: the first is written only where none is yet;
    later ones replace it, and an ended workflow's expires after ``ttl`` seconds."""
    token = workflow_token(entry.workflow_id)
    headers = {h.HDR_EVENT: INDEXED, h.HDR_STATUS: entry.status}
    if entry.started_at is not None:
        headers[HDR_STARTED] = str(_ms(entry.started_at))
    if first:
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        headers["Nats-Msg-Id"] = f"{token}:index"
        return headers
    headers["Nats-Rollup"] = "sub"
    if entry.ended:  # written once; other changes can repeat (failing again), so no id
        headers["Nats-Msg-Id"] = f"{token}:index:{entry.run}:end"
    if ttl:
        headers["Nats-TTL"] = f"{int(ttl)}s"
    return headers


def started_entry(
    workflow_id: str, start: Mapping[str, Any], time_ms: int | None = None
) -> WorkflowSummary:
    """The entry of a workflow from its ``WorkflowStarted`` record (``time_ms``: when it was
    stored, if known)."""
    parent = start.get("parent") or {}
    return WorkflowSummary(
        workflow_id,
        str(start.get("task_queue")),
        "running",
        workflow_type=_text(start.get("workflow")),
        run=_count(start.get("run", 1)),
        started_at=_when(time_ms or start.get("ts")),
        parent_id=_text(parent.get("workflow_id")) if isinstance(parent, Mapping) else None,
        schedule_id=_text(start.get("schedule")),
    )


def ended_entry(
    entry: WorkflowSummary, status: str, cmds: list[Mapping[str, Any]], time_ms: int
) -> WorkflowSummary:
    """``entry`` once its workflow ended with the decision ``cmds``."""
    error = next((cmd.get("error") for cmd in cmds if cmd.get("error")), None)
    failure = f"{error.get('type')}: {error.get('message')}" if isinstance(error, dict) else None
    return replace(entry, status=status, ended_at=_when(time_ms), failure=failure)


def _ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def _when(value: Any) -> datetime | None:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms > 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


class WorkflowIndex:
    """Reads and writes the index entries of one namespace (``store.index``)."""

    def __init__(
        self,
        api: JetStreamAPI,
        js: JetStreamContext,
        layout: Layout,
        encode: Callable[[Mapping[str, Any], str], bytes],
        decode: Callable[[bytes, str], Any],
        ttl: Callable[[], float | None],
    ) -> None:
        self._api = api
        self._js = js
        self._layout = layout
        self._encode = encode
        self._decode = decode
        self._ttl = ttl

    async def write(self, entry: WorkflowSummary, *, first: bool = False) -> None:
        """Write ``entry``; ``first``: only if the workflow has none yet (a start).

        An ended workflow's entry expires after ``history_retention``, as its history does.
        """
        headers = entry_headers(entry, first=first, ttl=self._ttl() if entry.ended else None)
        subject = self._layout.index_subject(entry.task_queue, entry.workflow_id)
        data = self._encode(entry.to_wire(), "an index entry")
        try:
            await self._api.publish(subject, data, headers, f"indexing {entry.workflow_id!r}")
        except AppendConflict:
            if not first:
                raise
            # The workflow has an entry already: the start was a second one, or came late.

    async def withdraw(self, entry: WorkflowSummary, why: str) -> None:
        """Replace the entry of a start that failed after all with one saying so, which
        expires a second later."""
        failed = replace(entry, status="failed", failure=why)
        headers = {**entry_headers(failed, first=False, ttl=None), "Nats-TTL": "1s"}
        subject = self._layout.index_subject(entry.task_queue, entry.workflow_id)
        data = self._encode(failed.to_wire(), "an index entry")
        await self._api.publish(subject, data, headers, f"withdrawing {entry.workflow_id!r}")

    async def current(self, queue: str, workflow_id: str) -> WorkflowSummary | None:
        """The workflow's entry, or None."""
        subject = self._layout.index_subject(queue, workflow_id)
        msg = await self._api.get_one({"last_by_subj": subject}, subject)
        return read_entry(msg, self._layout, self._decode) if msg is not None else None

    async def recent(self, limit: int) -> list[WorkflowSummary]:
        """The ``limit`` entries written last (workflows started or changed most recently),
        newest first. Reads windows of the stream backwards from its end, so the cost
        follows ``limit``, not the number of workflows."""
        try:
            info = await self._js.stream_info(self._layout.history_stream)
        except Exception as exc:
            raise wrap(exc, "listing workflows") from exc
        found: dict[str, WorkflowSummary] = {}
        high, span = int(info.state.last_seq), max(256, limit * 16)
        while high > 0 and len(found) < limit:
            low = max(1, high - span + 1)
            for msg in await self._range(low, high):
                entry = read_entry(msg, self._layout, self._decode)
                if entry is not None and entry.seq > getattr(
                    found.get(entry.workflow_id), "seq", 0
                ):
                    found[entry.workflow_id] = entry
            high, span = low - 1, span * 2
        return sorted(found.values(), key=lambda e: e.seq, reverse=True)[:limit]

    async def _range(self, low: int, high: int) -> list[Msg]:
        """The index messages stored at sequences ``low`` to ``high``."""
        out: list[Msg] = []
        seq = low
        while seq <= high:
            request = {"seq": seq, "next_by_subj": self._layout.index_all, "batch": 256}
            msgs, _ = await self._api.direct_get(request)
            for msg in msgs:
                seq = int((msg.headers or {}).get("Nats-Sequence", high)) + 1
                if seq - 1 > high:
                    return out
                out.append(msg)
            if len(msgs) < 256:
                break
        return out

    async def watch(self) -> WorkflowWatch:
        """The current entry of every workflow, then each change (see :class:`WorkflowWatch`)."""
        watch = WorkflowWatch(self._layout, self._decode)
        await watch.start(self._js)
        index = self._layout.index_all
        if await self._api.get_one({"last_by_subj": index}, index) is None:
            watch.nothing_to_catch_up()  # an empty index: no delivery will say it is caught up
        return watch


class WorkflowWatch:
    """An async iterator of :class:`WorkflowSummary`: first the current entry of every
    workflow, in the order they were last written, then each new or changed entry as it is
    written. ``await watch.caught_up()`` returns once the first part is delivered.

    It is an ordered consumer on the index subjects: the server delivers, the watch holds no
    state of its own and a lost connection resumes where it was. Close it when done.
    """

    def __init__(self, layout: Layout, decode: Callable[[bytes, str], Any]) -> None:
        self._layout = layout
        self._decode = decode
        self._queue: asyncio.Queue[WorkflowSummary] = asyncio.Queue()
        self._caught_up = asyncio.Event()
        self._sub: Any = None

    async def start(self, js: JetStreamContext) -> None:
        try:
            self._sub = await js.subscribe(
                self._layout.index_all,
                stream=self._layout.history_stream,
                cb=self._on_msg,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            )
        except Exception as exc:
            raise wrap(exc, "watching workflows") from exc

    def nothing_to_catch_up(self) -> None:
        self._caught_up.set()

    async def _on_msg(self, msg: Msg) -> None:
        entry = read_entry(msg, self._layout, self._decode)
        if entry is not None:
            self._queue.put_nowait(entry)
        if msg.metadata.num_pending == 0:
            self._caught_up.set()

    async def caught_up(self) -> None:
        """Wait until every entry that existed when the watch began was delivered."""
        await self._caught_up.wait()

    @property
    def is_caught_up(self) -> bool:
        return self._caught_up.is_set()

    def __aiter__(self) -> WorkflowWatch:
        return self

    async def __anext__(self) -> WorkflowSummary:
        return await self._queue.get()

    def pending(self) -> int:
        """Entries received and not yet taken."""
        return self._queue.qsize()

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing a connection that is gone already
                log.debug("closing a workflow watch: %s", exc)
