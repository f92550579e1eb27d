"""A worker stand-in for engine tests: feeds plain records to a WorkflowRun, no NATS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dfcore.core import _history as h
from dfcore.core._context import WorkflowContext
from dfcore.core._definitions import ActivityOptions, WorkflowDefinition
from dfcore.core._engine import WorkflowRun


class History:
    """An in-memory history that a WorkflowRun reads and appends decisions to."""

    def __init__(self, *workflows: Callable[..., Any], workflow_id: str = "wf-1") -> None:
        self.defs = {fn.__name__: WorkflowDefinition(fn.__name__, fn) for fn in workflows}
        self.workflow_id = workflow_id
        self.records: list[h.Record] = []
        self.ts = 1_700_000_000_000

    def new_run(self, lookup: Callable[[Any], Any] | None = None) -> WorkflowRun:
        run = WorkflowRun(self.workflow_id, self.defs.get, activity_lookup=lookup or _lookup)
        WorkflowContext(run)
        return run

    def fact(self, kind: str, **attrs: Any) -> h.Record:
        self.ts += attrs.pop("advance_ms", 10)
        record = h.Record(len(self.records) + 1, {"t": kind, "ts": self.ts, **attrs})
        self.records.append(record)
        return record

    def start(self, workflow: str, *args: Any, **extra: Any) -> h.Record:
        return self.fact(
            h.WORKFLOW_STARTED,
            workflow=workflow,
            args=list(args),
            task_queue="q",
            run_id="run-1",
            **extra,
        )

    def decide(self, run: WorkflowRun) -> list[dict[str, Any]]:
        """Apply everything new, append the decision (if any) like a worker does."""
        run.apply(self.records)
        cmds = run.pending_commands()
        if cmds:
            record = h.Record(len(self.records) + 1, {"t": h.DECIDED, "ts": self.ts, "cmds": cmds})
            self.records.append(record)
            run.apply([record])
        return cmds


def _lookup(ref: Any) -> tuple[str, ActivityOptions, Any]:
    name = ref if isinstance(ref, str) else ref.__name__
    return name, ActivityOptions(), None


def kinds(cmds: list[dict[str, Any]]) -> list[str]:
    return [c["t"] for c in cmds]
