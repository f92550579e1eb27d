"""Continue-as-new: a run ends and the workflow starts afresh under its id, with a history of
its own; the result follows the chain, earlier runs stay readable, and nothing sent meanwhile is
lost or answered twice."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from dfcore import App, EventType
from dfcore.core import _history as h
from dfcore.core._errors import DFError, WorkflowNotFoundError
from tests.enginekit import History, kinds
from tests.workerkit import WorkerThread, on_test_server, spawn_worker, wait_until

CONTINUED = EventType.WORKFLOW_CONTINUED_AS_NEW.value


async def step(ctx: Any, count: int) -> int:
    return count + 1


async def looping(ctx: Any, count: int) -> int:
    ctx.activity(step, count)  # started, never awaited: the next run does not wait for it
    await ctx.sleep(1)
    ctx.continue_as_new(count + 1)


async def catching(ctx: Any) -> None:
    try:
        ctx.continue_as_new("next")
    except Exception:
        return None


async def waiting(ctx: Any) -> list[Any]:
    return [await ctx.wait_signal("go"), ctx.info.run]


def test_continuing_ends_the_run_with_its_next_arguments() -> None:
    history = History(looping)
    history.start("looping", 1)
    run = history.new_run()
    assert kinds(history.decide(run)) == [h.ACTIVITY_SCHEDULED, h.TIMER_STARTED]
    fired = history.fact(h.TIMER_FIRED, timer="2")
    assert history.decide(run) == [{"t": CONTINUED, "args": [2], "after": fired.seq}]
    assert run.closed and run.pending_commands() == []
    history.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result=2)  # too late: nothing waits
    assert history.decide(run) == []


def test_an_ordinary_exception_handler_does_not_stop_it() -> None:
    history = History(catching)
    history.start("catching")
    assert history.decide(history.new_run()) == [{"t": CONTINUED, "args": ["next"], "after": 1}]


async def one_of_three(ctx: Any) -> None:
    await ctx.sleep(1)
    await ctx.wait_signal("item")
    ctx.continue_as_new()


def test_signals_the_run_did_not_wait_for_go_to_the_next() -> None:
    history = History(one_of_three)
    history.start("one_of_three")
    run = history.new_run()
    history.decide(run)  # the timer
    for i in range(3):
        history.fact(h.SIGNAL_RECEIVED, name="item", payload=i)  # buffered: the code sleeps
    fired = history.fact(h.TIMER_FIRED, timer="1")
    late = history.fact(h.SIGNAL_RECEIVED, name="item", payload=3)  # after the run ended
    [cmd] = history.decide(run)
    assert [(s["name"], s["payload"]) for s in cmd["carried"]] == [("item", 1), ("item", 2)]
    assert cmd["after"] == fired.seq < late.seq  # the worker carries the late one too


def test_the_next_run_ignores_answers_to_the_run_before_and_gets_the_signals_it_missed() -> None:
    history = History(waiting)
    carried = [{"t": h.SIGNAL_RECEIVED, "ts": 1, "name": "go", "payload": "early"}]
    history.start("waiting", run=2, carried=carried)
    history.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result="of run 1")
    run = history.new_run()
    assert history.decide(run) == [{"t": h.WORKFLOW_COMPLETED, "result": ["early", 2]}]


def test_the_execution_timeout_goes_on_across_runs() -> None:
    history = History(waiting)
    deadline = history.ts + 5_000
    history.start("waiting", run=3, deadline=deadline)
    [timer] = history.decide(history.new_run())
    assert timer["timer"] == "x" and timer["purpose"] == "execution_timeout"
    assert timer["fire_at"] == deadline  # the first run's deadline, not a new one


def test_arguments_that_cannot_be_sent_fail_at_the_call() -> None:
    from dfcore.core._errors import SerializationError

    async def bad(ctx: Any) -> None:
        ctx.continue_as_new(object())

    history = History(bad)
    history.start("bad")
    run = history.new_run()

    def check(value: Any, what: str) -> None:
        try:
            orjson.dumps(value)
        except TypeError:
            raise SerializationError(f"{what} cannot be sent") from None

    run._check_payload = check
    failure = history.decide(run)[0]
    assert failure["t"] == h.WORKFLOW_FAILED
    assert "the next run of workflow 'bad'" in failure["error"]["message"]


def test_called_outside_the_workflow_it_says_where_to_call_it() -> None:
    history = History(waiting)
    history.start("waiting")
    run = history.new_run()
    history.decide(run)
    errors: list[BaseException] = []

    def from_a_thread() -> None:
        try:
            run.context.continue_as_new(1)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_a_thread)
    thread.start()
    thread.join()
    [error] = errors
    assert isinstance(error, DFError)
    assert "ctx.continue_as_new() was called outside the workflow's code" in str(error)


# -- on a real server, with real workers -----------------------------------------------------


@pytest.fixture
def loops_app(nats_url: str, namespace: str) -> Iterator[App]:
    from tests.apps import loops

    with on_test_server(loops.app, nats_url, namespace) as app:
        yield app


def test_the_result_follows_the_chain_and_each_run_keeps_its_own_history(loops_app: App) -> None:
    with WorkerThread(loops_app):
        handle = loops_app.start("counter", 0, 7, 3, workflow_id="count-1")
        assert handle.result(timeout=60) == {"count": 7, "run": 3}
        status = handle.status()
        assert (status.status, status.run) == ("completed", 3)
        current = [e.type for e in handle.history()]
        first = [e.type for e in handle.history(run=1)]
        second = [e.type for e in handle.history(run=2)]
    # Each run's history is its own: one start, its steps, and how it ended.
    assert current.count(h.WORKFLOW_STARTED) == 1 and current.count(h.ACTIVITY_COMPLETED) == 1
    assert first.count(h.ACTIVITY_COMPLETED) == 3 and first[-1] == CONTINUED
    assert second.count(h.ACTIVITY_COMPLETED) == 3 and second[-1] == CONTINUED
    assert current[-1] == h.WORKFLOW_COMPLETED
    assert handle.history(run=2)[0].attributes["args"] == [3, 7, 3]
    with pytest.raises(WorkflowNotFoundError, match="its runs are 1 to 3"):
        handle.history(run=4)


def test_signals_sent_while_it_continues_all_reach_a_run_once(loops_app: App) -> None:
    with WorkerThread(loops_app):
        handle = loops_app.start("collector", [], 30, 4, workflow_id="collect-1")
        for i in range(30):
            handle.signal("item", i, signal_id=f"item-{i}")
        assert handle.result(timeout=60) == list(range(30))
        assert handle.status().run == 8


def test_a_plain_def_workflow_continues_too(loops_app: App) -> None:
    with WorkerThread(loops_app):
        handle = loops_app.start("sync_counter", 0, 3, workflow_id="sync-count")
        assert handle.result(timeout=60) == 3
        assert handle.status().run == 4


def test_each_runs_child_has_its_own_id(loops_app: App) -> None:
    with WorkerThread(loops_app):
        handle = loops_app.start("billing", 1, 3, workflow_id="bill")
        assert handle.result(timeout=60) == ["invoice-3", "bill"]
        children = ["bill/1", "bill/r2/1", "bill/r3/1"]
        assert [loops_app.get_handle(c).result(timeout=10) for c in children] == [
            "invoice-1",
            "invoice-2",
            "invoice-3",
        ]


def test_a_child_that_continues_reports_its_last_runs_result(loops_app: App) -> None:
    with WorkerThread(loops_app):
        parent = loops_app.start("counts_in_a_child", workflow_id="parent-of-count")
        assert parent.result(timeout=60) == {"count": 3, "run": 4}
        child = loops_app.get_handle("parent-of-count/1")
        assert child.history()[0].attributes["parent"]["workflow_id"] == "parent-of-count"


def test_a_worker_killed_while_continuing_starts_the_next_run_once(
    loops_app: App, nats_url: str, namespace: str, tmp_path: Path, processes: list[Any]
) -> None:
    effects = tmp_path / "effects"
    env = {"DF_TEST_SIDE_EFFECTS": str(effects)}
    app = "tests.apps.loops:app"
    dying = spawn_worker(
        nats_url,
        namespace,
        env={**env, "DF_TEST_DIE_WHILE_CONTINUING": "1"},
        app=app,
        log=tmp_path / "dying.log",
    )
    processes.append(dying)
    handle = loops_app.start("counter", 0, 4, 2, workflow_id="count-9")
    assert dying.wait(timeout=60) == -signal.SIGKILL  # run 1 kept, run 2 not started yet
    assert [e.type for e in handle.history()][-1] == CONTINUED
    processes.append(spawn_worker(nats_url, namespace, env=env, app=app))
    assert handle.result(timeout=60) == {"count": 4, "run": 3}
    assert [e.type for e in handle.history(run=1)].count(h.WORKFLOW_STARTED) == 1
    wait_until(lambda: effects.exists(), what="side effects recorded")
    assert sorted(effects.read_text().splitlines()) == [f"increment {i}" for i in range(4)]
