"""The typed parts of the wire protocol: event types and activity tasks, read and written in
one place each, and the forms earlier versions stored still read."""

from __future__ import annotations

from typing import Any

import pytest

from dfcore import EventType
from dfcore.core import _history as h
from dfcore.core._commands import command_from_wire
from dfcore.core._tasks import ActivityTask

#: An activity task exactly as version 0.1 published it (the keys are the wire's, not ours).
STORED_TASK: dict[str, Any] = {
    "wf": "order-1",
    "h": "shop.history.default.3.order-1",
    "seq": 2,
    "attempt": 1,
    "activity": "ship_package",
    "args": [{"charge_id": "ch_1"}, 2],
    "task_queue": "default",
    "start_to_close": 30,
    "heartbeat_timeout": None,
    "heartbeat": None,
    "dseq": 7,
}


def test_a_stored_task_reads_and_writes_back_unchanged() -> None:
    task = ActivityTask.from_wire(STORED_TASK)
    assert (task.workflow_id, task.seq, task.attempt, task.decision_seq) == ("order-1", 2, 1, 7)
    assert task.start_to_close == 30.0
    assert task.to_wire() == STORED_TASK


def test_a_task_is_built_from_its_scheduling_command() -> None:
    wire_only = {"wf", "h", "dseq", "heartbeat_timeout", "heartbeat"}
    command = {k: v for k, v in STORED_TASK.items() if k not in wire_only}
    command["t"] = EventType.ACTIVITY_SCHEDULED
    task = ActivityTask.scheduled("order-1", STORED_TASK["h"], 7, command_from_wire(command))
    assert ActivityTask.from_wire(task.to_wire()) == task
    assert task.to_wire() == STORED_TASK


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"attempt": None}, "'attempt' must be int"),
        ({"seq": True}, "'seq' must be int"),
        ({"dseq": 0}, "must be positive"),
        ({"args": "x"}, "'args' must be list"),
        ({"start_to_close": "30"}, "'start_to_close' must be a number of seconds"),
        ({"task_queue": 5}, "'task_queue' must be str"),
    ],
)
def test_a_malformed_task_names_what_is_wrong(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ActivityTask.from_wire({**STORED_TASK, **change})
    without = dict(STORED_TASK)
    del without["wf"]
    with pytest.raises(ValueError, match="missing field 'wf'"):
        ActivityTask.from_wire(without)


def test_event_types_are_the_strings_records_store() -> None:
    assert EventType.TIMER_FIRED == h.TIMER_FIRED == "TimerFired"
    assert EventType("WorkflowTimedOut").is_terminal
    assert not EventType.ACTIVITY_FAILED.is_terminal
    body = {"t": EventType.WORKFLOW_STARTED, "ts": 1, "workflow": "w", "args": []}
    assert h.validate_record(1, body).type == "WorkflowStarted"


def test_every_stored_command_reads_as_a_typed_command_and_writes_back_the_same() -> None:
    from tests.test_golden import load

    commands = [
        cmd
        for name in ("order_completed.json", "order_nondeterministic.json")
        for record in load(name)
        if record.type == h.DECIDED
        for cmd in record.commands
    ]
    assert {cmd["t"] for cmd in commands} >= {"ActivityScheduled", "TimerStarted"}
    for cmd in commands:
        written = command_from_wire(cmd).to_wire()
        assert written.items() >= cmd.items()  # everything stored is kept, as it was
        assert all(written[key] is None for key in written.keys() - cmd.keys())  # defaults


def test_a_fact_is_not_a_command() -> None:
    with pytest.raises(ValueError, match="'TimerFired' is not a command"):
        command_from_wire({"t": EventType.TIMER_FIRED, "timer": "1"})
