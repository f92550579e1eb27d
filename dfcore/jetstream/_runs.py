"""The copies of a continued workflow's earlier runs: their records packed into messages on
``<ns>.runs.<queue>.<wf>.<n>`` (:meth:`RunCopies.keep`) and read back (:meth:`RunCopies.load`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._codec import JSONConverter
from dfcore.core._errors import CodecUnavailableError, PayloadError
from dfcore.core._logfields import log_fields
from dfcore.jetstream._naming import Layout
from dfcore.jetstream._requests import JetStreamAPI

log = logging.getLogger("dfcore.store")


class _Storage(Protocol):
    api: JetStreamAPI
    layout: Layout
    converter: JSONConverter

    @property
    def max_payload(self) -> int: ...

    def encode(self, body: Mapping[str, Any], what: str) -> bytes: ...

    def decode(self, data: bytes, what: str) -> Any: ...


class RunCopies:
    """The earlier runs of continued workflows (``Store.runs``)."""

    def __init__(self, store: _Storage, retention: Callable[[], float | None]) -> None:
        self._store = store
        self._retention = retention

    async def keep(self, history_subject: str, run: int, records: list[h.Record]) -> None:
        """Copy a run's records to its runs subject before the next run's start rolls them up.

        A few messages, each holding as many records as fit; they expire after
        ``history_retention`` like an ended workflow's history. Idempotent within the
        duplicate window; a copy made twice is read once (:meth:`load`).
        """
        store = self._store
        queue, workflow_id = store.layout.parse_history_subject(history_subject)
        subject = store.layout.runs_subject(queue, workflow_id, run)
        headers: dict[str, str] = {h.HDR_EVENT: "RunRecords"}
        retention = self._retention()
        if retention is not None:
            headers["Nats-TTL"] = f"{retention}s"
        parts = run_parts(run, records, store.converter, int(store.max_payload * 0.6))
        for part, body in enumerate(parts):
            part_headers = {**headers, "Nats-Msg-Id": f"{history_subject}:run:{run}:{part}"}
            data = store.encode(body, f"the records of run {run}")
            await store.api.publish(subject, data, part_headers, f"keeping run {run}")

    async def load(self, history_subject: str, run: int) -> list[h.Record] | None:
        """The records of an earlier run, in order; None when none are kept (never made, or
        removed after ``history_retention``)."""
        store = self._store
        queue, workflow_id = store.layout.parse_history_subject(history_subject)
        subject = store.layout.runs_subject(queue, workflow_id, run)
        kept: dict[int, h.Record] = {}
        start = 1
        while True:
            msgs, more = await store.api.direct_get(
                {"seq": start, "next_by_subj": subject, "batch": 64}
            )
            for msg in msgs:
                for record in kept_records(msg, run, store.decode, workflow_id):
                    kept[record.seq] = record
            if not more or not msgs:
                break
            start = int(msgs[-1].headers["Nats-Sequence"]) + 1
        return [kept[seq] for seq in sorted(kept)] if kept else None


def run_parts(
    run: int, records: list[h.Record], converter: JSONConverter, limit: int
) -> list[dict[str, Any]]:
    """The messages that hold a run's records, each at most about ``limit`` bytes of JSON."""
    parts: list[list[dict[str, Any]]] = [[]]
    used = 0
    for record in records:
        kept = {"seq": record.seq, "stamp": record.stamp, "body": dict(record.body)}
        size = len(converter.dumps(kept, what="a record"))
        if parts[-1] and used + size > limit:
            parts.append([])
            used = 0
        parts[-1].append(kept)
        used += size
    return [{"t": "RunRecords", "run": run, "records": part} for part in parts if part]


def kept_records(
    msg: Msg, run: int, decode: Callable[[bytes, str], Any], workflow_id: str
) -> list[h.Record]:
    """The records one copy message of ``workflow_id``'s run ``run`` holds; none (with a
    warning) if it is unreadable."""
    try:
        body = decode(msg.data, f"the records of run {run}")
        return [
            h.validate_record(int(item["seq"]), item["body"], item.get("stamp"))
            for item in body["records"]
        ]
    except CodecUnavailableError:
        raise  # this process lacks the key: the copy is fine
    except (PayloadError, ValueError, KeyError, TypeError) as exc:
        fields = log_fields(workflow_id, run=run)  # its type is in the unreadable records
        log.warning(
            "skipping an unreadable copy of run %s on %s: %s", run, msg.subject, exc, extra=fields
        )
        return []
