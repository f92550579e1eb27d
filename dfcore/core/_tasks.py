"""Activity tasks: the messages a workflow worker publishes and an activity worker runs.

:class:`ActivityTask` is the one place a task is built (:meth:`ActivityTask.scheduled`, from
the ``ScheduleActivity`` command of a decision) and read back (:meth:`ActivityTask.from_wire`,
which checks every field a worker relies on). The wire form keeps the short keys stored tasks
have always had, so tasks queued by an earlier version are read the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dfcore.core._commands import ScheduleActivity
from dfcore.core._facts import run_of

#: Required fields of the wire form, with their JSON types.
_REQUIRED: Mapping[str, type] = {
    "wf": str,
    "h": str,
    "seq": int,
    "attempt": int,
    "activity": str,
    "args": list,
    "dseq": int,
}
_NUMBER = (int, float)


@dataclass(frozen=True)
class ActivityTask:
    """One attempt of one activity call of one workflow.

    Attributes:
        workflow_id: the workflow the call belongs to.
        history: the subject of its history, where the attempt's outcome is appended.
        seq: the call's number in the workflow; attempt: the attempt's, from 1.
        activity: the activity's registered name; args: its arguments, as JSON values.
        task_queue: the queue it was published to.
        decision_seq: the sequence of the decision that scheduled it (outcomes chain to it).
        start_to_close, heartbeat_timeout: seconds, or None.
        heartbeat: the details of the previous attempt's last heartbeat.
        run: the workflow's run that scheduled it (its outcome names it).
        workflow_type: the workflow's type, for the worker's log lines ("" when the
            decision was carried out by a worker that did not hold the run, or by an
            earlier version).
    """

    workflow_id: str
    history: str
    seq: int
    attempt: int
    activity: str
    args: list[Any]
    decision_seq: int
    task_queue: str = ""
    start_to_close: float | None = None
    heartbeat_timeout: float | None = None
    heartbeat: Any = field(default=None, compare=False)
    run: int = 1
    workflow_type: str = ""

    @classmethod
    def scheduled(
        cls,
        workflow_id: str,
        history: str,
        decision_seq: int,
        command: ScheduleActivity,
        run: int = 1,
        workflow_type: str = "",
    ) -> ActivityTask:
        """The task a ``ScheduleActivity`` command of decision ``decision_seq`` asks for."""
        return cls(
            workflow_id=workflow_id,
            history=history,
            seq=command.seq,
            attempt=command.attempt,
            activity=command.activity,
            args=command.args,
            decision_seq=decision_seq,
            task_queue=command.task_queue,
            start_to_close=command.start_to_close,
            heartbeat_timeout=command.heartbeat_timeout,
            heartbeat=command.heartbeat,
            run=run,
            workflow_type=workflow_type,
        )

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "wf": self.workflow_id,
            "h": self.history,
            "seq": self.seq,
            "attempt": self.attempt,
            "activity": self.activity,
            "args": self.args,
            "task_queue": self.task_queue,
            "start_to_close": self.start_to_close,
            "heartbeat_timeout": self.heartbeat_timeout,
            "heartbeat": self.heartbeat,
            "dseq": self.decision_seq,
        }
        if self.run > 1:
            wire["run"] = self.run
        if self.workflow_type:
            wire["wt"] = self.workflow_type
        return wire

    @classmethod
    def from_wire(cls, body: Any) -> ActivityTask:
        """Read a decoded task; raises ``ValueError`` naming what is wrong with it."""
        if not isinstance(body, Mapping):
            raise ValueError(f"expected a JSON object, got {type(body).__name__}")
        for name, kind in _REQUIRED.items():
            if name not in body:
                raise ValueError(f"missing field {name!r}")
            value = body[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{name!r} must be {kind.__name__}, got {type(value).__name__}")
        if body["dseq"] < 1 or body["seq"] < 1 or body["attempt"] < 1:
            raise ValueError("'dseq', 'seq' and 'attempt' must be positive")
        timeouts = {}
        for name in ("start_to_close", "heartbeat_timeout"):
            value = body.get(name)
            if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
                raise ValueError(f"{name!r} must be a number of seconds, got {value!r}")
            timeouts[name] = None if value is None else float(value)
        queue, workflow_type = body.get("task_queue", ""), body.get("wt", "")
        for name, text in (("task_queue", queue), ("wt", workflow_type)):
            if not isinstance(text, str):
                raise ValueError(f"{name!r} must be str, got {type(text).__name__}")
        return cls(
            workflow_id=body["wf"],
            history=body["h"],
            seq=body["seq"],
            attempt=body["attempt"],
            activity=body["activity"],
            args=body["args"],
            decision_seq=body["dseq"],
            task_queue=queue,
            heartbeat=body.get("heartbeat"),
            run=run_of(body),
            workflow_type=workflow_type,
            **timeouts,
        )
