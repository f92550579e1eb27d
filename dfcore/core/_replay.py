"""A run of registered workflow code over a history, and histories exported to files.

Workers build every run here (:func:`new_run`). The same run replays an exported history
against the code on disk (:func:`replay`), which is how a deploy is checked before it ships:
``dfcore workflow show ID --json > order.json`` today, ``dfcore workflow replay order.json``
in CI after the change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from dfcore.core import _history as h
from dfcore.core._config import Settings
from dfcore.core._context import WorkflowContext
from dfcore.core._engine import WorkflowRun
from dfcore.core._errors import DFError
from dfcore.core._registry import Registry

#: What ``format`` says in an exported history; a reader refuses other versions by name.
HISTORY_FORMAT: Final = "dfcore.history/1"


def new_run(
    registry: Registry,
    workflow_id: str,
    settings: Settings,
    check_payload: Callable[[Any, str], None] | None = None,
) -> WorkflowRun:
    """A fresh run of ``workflow_id`` over the registered code, with its context."""
    run = WorkflowRun(
        workflow_id,
        registry.workflows.get,
        namespace=settings.namespace,
        default_activity_timeout=settings.default_activity_timeout,
        activity_lookup=registry.lookup_activity,
        check_payload=check_payload,
    )
    WorkflowContext(run)
    return run


def export_history(workflow_id: str, namespace: str, records: Sequence[h.Record]) -> dict[str, Any]:
    """A history as JSON-ready data: each record's sequence, server stamp and decoded body."""
    first = records[0].body if records else {}
    return {
        "format": HISTORY_FORMAT,
        "workflow_id": workflow_id,
        "namespace": namespace,
        "workflow_type": first.get("workflow") if first.get("t") == h.WORKFLOW_STARTED else None,
        "records": [{"seq": r.seq, "stamp": r.stamp, "body": dict(r.body)} for r in records],
    }


class HistoryFileError(DFError):
    """An exported history cannot be read."""


def read_history(data: Any, source: str) -> tuple[str, list[h.Record]]:
    """The workflow id and records of an exported history (``source`` names it in errors).

    Also reads a bare list of ``{"seq", "body"}`` records (the golden files of tests).
    """
    workflow_id = "replayed"
    items = data
    if isinstance(data, Mapping):
        if data.get("format") != HISTORY_FORMAT:
            raise HistoryFileError(
                f"{source} is not a history this version reads: its format is "
                f"{data.get('format')!r}, expected {HISTORY_FORMAT!r} (export it with "
                "'dfcore workflow show ID --json')"
            )
        workflow_id = str(data.get("workflow_id") or workflow_id)
        items = data.get("records")
    if not isinstance(items, list) or not items:
        raise HistoryFileError(f"{source} holds no records (export with 'workflow show ID --json')")
    records = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, Mapping) or not isinstance(item.get("seq"), int):
            raise HistoryFileError(f"{source}: record {i} has no 'seq' and 'body'")
        stamp = item.get("stamp")
        try:
            record = h.validate_record(item["seq"], item.get("body"), stamp)
        except h.MalformedRecordError as exc:
            raise HistoryFileError(f"{source}: {exc}") from None
        records.append(record)
    return workflow_id, records


def replay(
    registry: Registry, settings: Settings, workflow_id: str, records: Sequence[h.Record]
) -> WorkflowRun:
    """Replay ``records`` against the registered code, as a worker picking the run up would.

    Raises:
        NondeterminismError: the code no longer produces what the history recorded.
        UnregisteredWorkflowError: no workflow of the history's type is registered.
        WorkflowCodeError: the code raised (a bug) on the way.
    """
    run = new_run(registry, workflow_id, settings, None)
    run.apply(records)
    return run
