"""The structured fields of a log line about one workflow: ``log.info(..., extra=log_fields(x))``.

A line about one workflow carries ``workflow_id``, ``run`` (the run's number, 1 unless it
continued as new) and ``workflow_type`` as attributes of its record; a line about an activity
attempt carries ``activity`` and ``attempt`` too. A JSON formatter
(``dfcore.cli.JsonFormatter``) or a filter picks them out without parsing the message, which
stays as it was. A field the code does not know where it logs is left out, never guessed.
"""

from __future__ import annotations

from typing import Any

from dfcore.core._run_state import RunInfo
from dfcore.core._tasks import ActivityTask

FIELDS = ("workflow_id", "run", "workflow_type", "activity", "attempt")
"""The fields of a workflow's lines, in the order a JSON line shows them."""


def log_fields(
    of: RunInfo | ActivityTask | str | None,
    *,
    run: int | None = None,
    workflow_type: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """``extra=`` for a line about ``of``: a run, an activity attempt, or a workflow's id
    (None: no workflow); ``run`` and ``workflow_type`` say what a bare id cannot, ``more``
    any other field of the line (``schedule=...``). None and empty values are left out."""
    fields: dict[str, Any]
    if isinstance(of, RunInfo):
        fields = {"workflow_id": of.workflow_id, "run": of.run, "workflow_type": of.workflow_type}
    elif isinstance(of, ActivityTask):
        fields = {
            "workflow_id": of.workflow_id,
            "run": of.run,
            "workflow_type": of.workflow_type,
            "activity": of.activity,
            "attempt": of.attempt,
        }
    else:
        fields = {"workflow_id": of}
    known = {"run": run, "workflow_type": workflow_type, **more}
    fields.update((key, value) for key, value in known.items() if value is not None)
    return {key: value for key, value in fields.items() if value is not None and value != ""}
