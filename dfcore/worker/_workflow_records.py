"""The records a workflow worker writes and the lines it logs: decisions, task-failure notes,
progress; and whether a delivered fact follows the last record applied."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dfcore.core import _history as h
from dfcore.core._errors import DFError, WorkflowCodeError
from dfcore.core._facts import WorkflowTaskFailed
from dfcore.core._history import now_ms
from dfcore.core._logfields import log_fields
from dfcore.core._run_state import RunInfo
from dfcore.jetstream._naming import workflow_token
from dfcore.jetstream._requests import AppendConflict
from dfcore.worker._indexing import index_change
from dfcore.worker._storage import WorkerStore

log = logging.getLogger("dfcore.worker")


def split_decision(cmds: list[dict[str, Any]], store: WorkerStore) -> list[list[dict[str, Any]]]:
    """Group the commands of a decision too big for one message into decisions that fit."""
    limit = int(store.max_payload * 0.8)
    parts: list[list[dict[str, Any]]] = [[]]
    used = 0
    for cmd in cmds:
        size = len(store.encode({"c": cmd}, "a command"))
        if parts[-1] and used + size > limit:
            parts.append([])
            used = 0
        parts[-1].append(cmd)
        used += size
    return parts


def follows(record: h.Record, prev: int | None, last_seq: int) -> bool:
    """Whether the delivered fact provably comes right after ``last_seq`` (no gap to read).

    Only a ``prev`` the server checked proves it; a start proves it only by opening its
    history (``Store.is_first_record``), and a decision is always read back.
    """
    if record.type in (h.DECIDED, h.WORKFLOW_STARTED) or last_seq < 1:
        return False
    return prev == last_seq


def log_progress(
    info: RunInfo, first: bool, status: str | None, cmds: list[dict[str, Any]]
) -> None:
    """The worker's lines for a run it started or ended (``-l INFO``)."""
    ended_badly = status not in (None, "completed")
    if not log.isEnabledFor(logging.WARNING if ended_badly else logging.INFO):
        return  # quiet workers build no lines
    fields = log_fields(info)
    name = f"{info.workflow_type}[{info.workflow_id}]"
    if first:
        log.info("workflow %s started", name, extra=fields)
    if status is None:
        return
    took = max(0, now_ms() - info.start_time_ms) / 1000 if info.start_time_ms else 0.0
    if status == "completed":
        log.info("workflow %s completed in %.3fs", name, took, extra=fields)
        return
    error = next((cmd.get("error") for cmd in cmds if cmd.get("error")), None) or {}
    why = f": {error.get('type')}: {error.get('message')}" if error.get("type") else ""
    log.warning("workflow %s %s after %.3fs%s", name, status, took, why, extra=fields)


def task_error(exc: BaseException) -> dict[str, Any]:
    """The error of a failed workflow task, as recorded in its WorkflowTaskFailed note."""
    cause = exc.__cause__ if isinstance(exc, WorkflowCodeError) and exc.__cause__ else exc
    error: dict[str, Any] = {"type": type(cause).__name__, "message": str(cause)}
    if isinstance(exc, WorkflowCodeError):
        error["traceback"] = exc.traceback
    return error


async def note_task_failure(
    store: WorkerStore, subject: str, exc: DFError, attempt: int, fields: Mapping[str, Any]
) -> None:
    """Record in the history that the workflow's task fails, once per stuck point
    (``fields``: the workflow's, for the log lines).

    The note is for people (``dfcore workflow show``, ``handle.status()``); replay ignores it.
    If the history already ends with a note, or anything was appended meanwhile, nothing is
    written: the next failed attempt writes it then.
    """
    workflow_id = store.layout.parse_history_subject(subject)[1]
    try:
        last = await store.last(subject)
        if last is None or last[1].type == h.WORKFLOW_TASK_FAILED:
            return
        prev = last[1].seq
        note = WorkflowTaskFailed(task_error(exc), attempt, prev)
        msg_id = f"{workflow_token(workflow_id)}:tf:{prev}"
        await store.append(subject, note.to_wire(), msg_id=msg_id, expected_seq=prev)
    except AppendConflict:
        return
    except DFError as error:
        log.warning(
            "workflow %s: cannot note the task failure: %s", workflow_id, error, extra=fields
        )
        return
    failure = f"{note.error.get('type')}: {note.error.get('message')}"
    await index_change(store, subject, status="failing", failure=failure)
