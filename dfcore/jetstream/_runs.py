"""The copies of a continued workflow's earlier runs: how their records are packed into
messages on ``<ns>.runs.<queue>.<wf>.<n>`` (``Store.keep_run``) and read back
(``Store.load_run``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._codec import JSONConverter
from dfcore.core._errors import CodecUnavailableError, PayloadError

log = logging.getLogger("dfcore.store")


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


def kept_records(msg: Msg, run: int, decode: Callable[[bytes, str], Any]) -> list[h.Record]:
    """The records one copy message holds; none (with a warning) if it is unreadable."""
    try:
        body = decode(msg.data, f"the records of run {run}")
        return [
            h.validate_record(int(item["seq"]), item["body"], item.get("stamp"))
            for item in body["records"]
        ]
    except CodecUnavailableError:
        raise  # this process lacks the key: the copy is fine
    except (PayloadError, ValueError, KeyError, TypeError) as exc:
        log.warning("skipping an unreadable copy of run %s on %s: %s", run, msg.subject, exc)
        return []
