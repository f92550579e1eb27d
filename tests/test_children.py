"""Child workflows in the engine: started once under an id replay keeps, awaited, signalled,
cancelled with their parent, and their failures typed."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import App, ChildWorkflowError, EventType, WorkflowFailureError
from dfcore.core import _history as h
from dfcore.core._errors import WorkflowCodeError, WorkflowNotFoundError
from tests.enginekit import History, kinds
from tests.workerkit import WorkerThread, on_test_server, spawn_worker, wait_until

CHILD_STARTED = EventType.CHILD_WORKFLOW_STARTED.value
CHILD_ENDED = EventType.CHILD_WORKFLOW_ENDED.value


async def invoice(ctx: Any, order_id: str) -> dict[str, Any]:
    return {"invoice": f"inv-{order_id}"}


async def order(ctx: Any, order_id: str) -> dict[str, Any]:
    billed = await ctx.child(invoice, order_id)
    return {"order": order_id, **billed}


async def order_catching(ctx: Any) -> list[Any]:
    try:
        await ctx.child(invoice, "o-1")
    except ChildWorkflowError as exc:
        return [exc.status, exc.cause_type, exc.cause_message, exc.workflow_id]
    return []


async def supervisor(ctx: Any, policy: str) -> None:
    handle = await ctx.start_child(invoice, "o-2", parent_close_policy=policy)
    await handle.signal("nudge", {"n": 1})
    await ctx.wait_signal("never")


def started(history: History, cmd: dict[str, Any]) -> None:
    history.fact(CHILD_STARTED, seq=cmd["seq"], workflow_id=cmd["workflow_id"], run_id="r")


def test_a_child_runs_under_an_id_from_its_parent_and_its_result_comes_back() -> None:
    history = History(order, invoice, workflow_id="order-7")
    history.start("order", "o-7")
    run = history.new_run()
    [cmd] = history.decide(run)
    assert cmd == {
        "t": "ChildWorkflowScheduled",
        "seq": 1,
        "workflow": "invoice",
        "workflow_id": "order-7/1",
        "task_queue": "q",
        "args": ["o-7"],
        "parent_close_policy": "cancel",
    }
    started(history, cmd)
    assert history.decide(run) == []  # waiting for the child's end
    history.fact(CHILD_ENDED, seq=1, status="completed", result={"invoice": "inv-o-7"})
    assert history.decide(run) == [
        {"t": h.WORKFLOW_COMPLETED, "result": {"order": "o-7", "invoice": "inv-o-7"}}
    ]
    # A worker replaying the whole history starts nothing again.
    replayed = History(order, invoice, workflow_id="order-7").new_run()
    replayed.apply(history.records)
    assert replayed.closed and replayed.pending_commands() == []


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        ("failed", {"type": "ActivityError", "message": "card declined"}, "ActivityError"),
        ("timed_out", {"type": "TimeoutError", "message": "too slow"}, "TimeoutError"),
        ("cancelled", {"type": "CancelledError", "message": "cancelled"}, "CancelledError"),
    ],
)
def test_a_child_that_does_not_complete_raises_a_typed_error_with_its_cause(
    status: str, error: dict[str, Any], expected: str
) -> None:
    history = History(order_catching, invoice, workflow_id="p")
    history.start("order_catching")
    run = history.new_run()
    [cmd] = history.decide(run)
    started(history, cmd)
    history.decide(run)
    history.fact(CHILD_ENDED, seq=1, status=status, error=error)
    [done] = history.decide(run)
    assert done["result"] == [status, expected, error["message"], "p/1"]


def test_a_child_that_cannot_start_fails_the_start() -> None:
    history = History(order_catching, invoice, workflow_id="p")
    history.start("order_catching")
    run = history.new_run()
    history.decide(run)
    error = {"type": "WorkflowAlreadyStartedError", "message": "workflow 'p/1' exists"}
    history.fact(CHILD_ENDED, seq=1, status="not_started", error=error)
    [done] = history.decide(run)
    assert done["result"][:2] == ["not_started", "WorkflowAlreadyStartedError"]


@pytest.mark.parametrize("policy", ["cancel", "abandon"])
def test_a_cancelled_parent_cancels_its_children_unless_it_abandons_them(policy: str) -> None:
    history = History(supervisor, invoice, workflow_id="sup")
    history.start("supervisor", policy)
    run = history.new_run()
    [cmd] = history.decide(run)
    started(history, cmd)
    [signal] = history.decide(run)
    assert signal == {
        "t": "ChildWorkflowSignalled",
        "seq": 2,
        "child": 1,
        "workflow_id": "sup/1",
        "task_queue": "q",
        "name": "nudge",
        "payload": {"n": 1},
    }
    history.fact(h.CANCEL_REQUESTED, reason="stop")
    ending = history.decide(run)
    if policy == "cancel":
        assert ending[0] == {
            "t": "ChildWorkflowCancelRequested",
            "child": 1,
            "workflow_id": "sup/1",
            "task_queue": "q",
        }
    assert kinds(ending) == ["ChildWorkflowCancelRequested"] * (policy == "cancel") + [
        h.WORKFLOW_CANCELLED
    ]


async def unregistered(ctx: Any) -> Any:
    return await ctx.child("nobody-has-this")


async def named_elsewhere(ctx: Any) -> Any:
    return await ctx.child("billing", 1, task_queue="billing")


def test_an_unregistered_child_fails_at_the_call_naming_what_to_do() -> None:
    history = History(unregistered)
    history.start("unregistered")
    [failed] = history.decide(history.new_run())
    assert failed["t"] == h.WORKFLOW_FAILED
    assert "'nobody-has-this' is not registered here" in failed["error"]["message"]
    assert "task_queue=" in failed["error"]["message"]
    elsewhere = History(named_elsewhere)
    elsewhere.start("named_elsewhere")
    [cmd] = elsewhere.decide(elsewhere.new_run())  # another queue's workers may have it
    assert (cmd["workflow"], cmd["task_queue"]) == ("billing", "billing")


async def bad_policy(ctx: Any) -> Any:
    return await ctx.child(invoice, "x", parent_close_policy="ignore")


def test_a_bad_close_policy_is_refused_at_the_call() -> None:
    history = History(bad_policy, invoice)
    history.start("bad_policy")
    with pytest.raises(WorkflowCodeError) as info:
        history.decide(history.new_run())
    assert "parent_close_policy must be 'cancel' or 'abandon'" in str(info.value)


def sync_order(ctx: Any, order_id: str) -> dict[str, Any]:
    return {"order": order_id, **ctx.child(invoice, order_id)}


def test_a_plain_def_parent_runs_a_child_too() -> None:
    history = History(sync_order, invoice, workflow_id="s")
    history.start("sync_order", "o-9")
    run = history.new_run()
    [cmd] = history.decide(run)
    started(history, cmd)
    history.decide(run)
    history.fact(CHILD_ENDED, seq=1, status="completed", result={"invoice": "inv-o-9"})
    assert history.decide(run)[0]["result"] == {"order": "o-9", "invoice": "inv-o-9"}


# -- on a real server, with real workers -----------------------------------------------------


@pytest.fixture
def children_app(nats_url: str, namespace: str) -> Iterator[App]:
    from tests.apps import children

    with on_test_server(children.app, nats_url, namespace) as app:
        yield app


def test_a_parent_runs_children_to_their_results_and_typed_failures(children_app: App) -> None:
    with WorkerThread(children_app):
        result = children_app.start("checkout", "o-1", workflow_id="co-1").result(timeout=30)
        child = children_app.get_handle("co-1/1")
        assert child.result(timeout=10) == {"invoice": "inv-o-1"}
    assert result == {
        "invoice": "inv-o-1",
        "second": ["failed", "ActivityError", "co-1/2"],
    }
    parent_events = [e.type for e in children_app.get_handle("co-1").history()]
    assert parent_events.count(CHILD_STARTED) == 2 and parent_events.count(CHILD_ENDED) == 2
    started_body = child.export()["records"][0]["body"]
    assert started_body["parent"]["workflow_id"] == "co-1" and started_body["parent"]["seq"] == 1


@pytest.mark.parametrize(
    ("policy", "child_status"), [("cancel", "cancelled"), ("abandon", "running")]
)
def test_a_cancelled_parent_ends_its_child_by_its_close_policy(
    children_app: App, policy: str, child_status: str
) -> None:
    with WorkerThread(children_app):
        parent = children_app.start("supervise", policy, workflow_id=f"sup-{policy}")
        child = children_app.get_handle(f"sup-{policy}/1")
        wait_until(lambda: status(child) == "running", what="the child running")
        parent.cancel()
        wait_until(lambda: status(parent) == "cancelled", what="the parent cancelled")
        wait_until(lambda: status(child) == child_status, what=f"a {child_status} child")
        if policy == "abandon":
            child.signal("go", "later")
            assert child.result(timeout=10) == "later"


def status(handle: Any) -> str | None:
    try:
        return str(handle.status().status)
    except WorkflowNotFoundError:
        return None  # not started yet


def test_a_worker_killed_between_the_childs_start_and_its_record_starts_it_once(
    children_app: App, nats_url: str, namespace: str, tmp_path: Path, processes: list[Any]
) -> None:
    effects = tmp_path / "effects"
    env = {"DF_TEST_SIDE_EFFECTS": str(effects)}
    dying = spawn_worker(
        nats_url,
        namespace,
        env={**env, "DF_TEST_DIE_BEFORE_CHILD_RECORD": "1"},
        app="tests.apps.children:app",
    )
    processes.append(dying)
    parent = children_app.start("checkout", "o-9", workflow_id="co-9")
    assert dying.wait(timeout=60) == -signal.SIGKILL  # it made the child's history, then died
    child = children_app.get_handle("co-9/1")
    assert [e.type for e in child.history()][:1] == [h.WORKFLOW_STARTED]
    assert CHILD_STARTED not in [e.type for e in parent.history()]
    processes.append(spawn_worker(nats_url, namespace, env=env, app="tests.apps.children:app"))
    assert parent.result(timeout=60)["invoice"] == "inv-o-9"
    assert [e.type for e in child.history()].count(h.WORKFLOW_STARTED) == 1
    # One record of each child's start (the first child's may be recorded after the parent
    # ended: the crashed decision is carried out again when it is redelivered).
    wait_until(
        lambda: [e.type for e in parent.history()].count(CHILD_STARTED) == 2,
        what="both children's starts recorded",
    )
    seqs = sorted(e.attributes["seq"] for e in parent.history() if e.type == CHILD_STARTED)
    assert seqs == [1, 2]
    assert effects.read_text().splitlines().count("bill o-9") == 1


def test_a_child_id_taken_by_another_workflow_fails_the_start(children_app: App) -> None:
    with WorkerThread(children_app):
        children_app.start("waits", workflow_id="co-2/1")  # not co-2's child
        parent = children_app.start("checkout", "o-2", workflow_id="co-2")
        with pytest.raises(WorkflowFailureError) as info:
            parent.result(timeout=30)
        children_app.get_handle("co-2/1").cancel()
    assert "child workflow 'co-2/1' (invoice) not started" in str(info.value)
    assert "already exists and is not this parent's child" in str(info.value)
