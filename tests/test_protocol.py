"""The typed parts of the wire protocol: event types, facts, commands and activity tasks, read
and written in one place each, and the forms earlier versions stored still read."""

from __future__ import annotations

from typing import Any

import pytest

from dfcore import EventType
from dfcore.core import _history as h
from dfcore.core._commands import command_from_wire
from dfcore.core._facts import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    ChildWorkflowEnded,
    ChildWorkflowStarted,
    Decision,
    Fact,
    SignalReceived,
    TimerFired,
    WorkflowStarted,
    WorkflowTaskFailed,
    fact_from_wire,
)
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


FACTS: list[Fact] = [
    WorkflowStarted("order", ["Bob", 2], "default", "run-1", execution_timeout=60.0, ts=5),
    ActivityCompleted(1, 1, {"charge_id": "ch_1"}, ts=6),
    ActivityFailed(3, 2, {"type": "ConnectionError", "message": "down"}, heartbeat=[4], ts=7),
    TimerFired("3r2", ts=8),
    SignalReceived("approve", {"by": "ann"}, ts=9),
    CancelRequested("customer asked", ts=10),
    WorkflowTaskFailed({"type": "KeyError", "message": "'sku'"}, attempt=2, prev=11, ts=12),
    ChildWorkflowStarted(4, "order-1/4", "run-2", ts=13),
    ChildWorkflowEnded(4, "failed", error={"type": "ActivityError", "message": "no"}, ts=14),
]


def test_there_is_one_typed_fact_for_every_fact_type() -> None:
    assert {fact.type for fact in FACTS} == h.FACT_TYPES


@pytest.mark.parametrize("fact", FACTS, ids=lambda fact: fact.type)
def test_a_fact_passes_the_record_check_and_reads_back_as_itself(fact: Fact) -> None:
    record = h.validate_record(1, fact.to_wire())
    assert record.type == fact.type
    assert fact_from_wire(record.body) == fact


def test_every_stored_fact_reads_as_a_typed_fact_and_writes_back_the_same() -> None:
    from tests.test_golden import load

    facts = [
        record.body
        for name in ("order_completed.json", "order_nondeterministic.json")
        for record in load(name)
        if record.type != h.DECIDED
    ]
    assert {body["t"] for body in facts} == {
        "WorkflowStarted",
        "ActivityCompleted",
        "ActivityFailed",
        "TimerFired",
    }
    for body in facts:
        written = fact_from_wire(body).to_wire()
        assert written.items() >= body.items()  # everything stored is kept, as it was
        assert written.keys() - body.keys() <= {"prev"}  # 0.1 starts had no "prev"


def test_an_older_start_without_queue_run_or_timeout_still_reads() -> None:
    started = fact_from_wire({"t": "WorkflowStarted", "ts": 1, "workflow": "w", "args": []})
    assert started == WorkflowStarted("w", [], task_queue="", run_id="", ts=1)


def test_a_decision_is_a_record_and_only_its_parts_but_the_last_say_more() -> None:
    cmd = {"t": EventType.WORKFLOW_COMPLETED.value, "result": 3}
    whole = h.validate_record(2, Decision([cmd], prev=1).to_wire())
    assert whole.commands == [cmd] and "more" not in whole.body
    assert Decision([cmd], prev=1, more=True).to_wire()["more"] is True


def test_a_command_is_not_a_fact() -> None:
    with pytest.raises(ValueError, match="'Decided' is not a fact"):
        fact_from_wire({"t": h.DECIDED, "cmds": []})


ODD_VALUES = ["x", [1], {"a": 1}, True, None, 1.5, -3, 10**30]
OPTIONAL = {
    "WorkflowStarted": ["task_queue", "run_id", "execution_timeout", "parent", "prev"],
    "ActivityCompleted": ["result"],
    "ActivityFailed": ["error", "heartbeat"],
    "SignalReceived": ["payload"],
    "CancelRequested": ["reason"],
    "WorkflowTaskFailed": ["attempt", "prev"],
    "ChildWorkflowStarted": ["run_id"],
    "ChildWorkflowEnded": ["result", "error"],
}


@pytest.mark.parametrize("fact", FACTS, ids=lambda fact: fact.type)
@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
def test_a_checked_fact_reads_whatever_its_optional_fields_hold(fact: Fact, odd: Any) -> None:
    # What the record check lets through must read: a forged optional field is read as
    # absent, not an exception on every replay of the workflow.
    for name in OPTIONAL.get(fact.type, []):
        body = {**fact.to_wire(), name: odd}
        try:
            record = h.validate_record(1, body)
        except h.MalformedRecordError:
            continue
        assert fact_from_wire(record.body).type == fact.type


@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
def test_a_checked_command_reads_whatever_its_optional_fields_hold(odd: Any) -> None:
    from tests.test_golden import load

    commands = [c for r in load("order_completed.json") for c in r.commands]
    for cmd in commands:
        for name in [k for k in cmd if k not in h._REQUIRED[cmd["t"]] and k != "t"]:
            body = {"t": h.DECIDED, "ts": 1, "cmds": [{**cmd, name: odd}]}
            try:
                record = h.validate_record(1, body)
            except h.MalformedRecordError:
                continue
            command_from_wire(record.commands[0])
