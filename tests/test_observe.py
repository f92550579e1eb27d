"""What the engine tells an app's observers, and the trace context it carries for them in
message headers: every decision reported once, by the worker whose append won, with the facts
it answers; every activity attempt with its outcome; never a replayed step again."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import nats
import pytest

from dfcore import (
    ApplicationError,
    AttemptObservation,
    ObservedAttempt,
    ObservedStart,
    ObservedTask,
    Observer,
    RetryPolicy,
)
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._naming import Layout

from .workerkit import WorkerThread, wait_until

START = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder(Observer):
    """Keeps what it is told; gives each decision a traceparent of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[ObservedStart] = []
        self.tasks: list[ObservedTask] = []
        self.attempts: list[tuple[ObservedAttempt, str]] = []
        self.caches: list[str] = []

    def start(self, start: ObservedStart) -> Mapping[str, str]:
        self.starts.append(start)
        return {"traceparent": START, "x-not-carried": "1", "tracestate": "k=" + "v" * 2000}

    def workflow_task(self, task: ObservedTask) -> Mapping[str, str]:
        with self.lock:
            self.tasks.append(task)
            n = len(self.tasks)
        return {"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-{n:016x}-01"}

    def activity_attempt(self, attempt: ObservedAttempt) -> AttemptObservation:
        recorder = self

        class Held(AttemptObservation):
            def end(self, outcome: Any, error: BaseException | None = None) -> None:
                with recorder.lock:
                    recorder.attempts.append((attempt, outcome))

        return Held()

    def cache(self, task_queue: str, outcome: Any) -> None:
        with self.lock:
            self.caches.append(outcome)

    def of(self, workflow_id: str) -> list[ObservedTask]:
        with self.lock:
            return [task for task in self.tasks if task.workflow_id == workflow_id]


class Carrier(Observer):
    """Gives every start the same trace context, as a tracer would give it the current span's."""

    TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    def start(self, start: ObservedStart) -> Mapping[str, str]:
        return {"traceparent": self.TRACEPARENT}


def first_history_message(nats_url: str, namespace: str, workflow_id: str) -> Any:
    """The first message of a workflow's history, headers and all, as the server holds it."""

    async def read() -> Any:
        nc = await nats.connect(nats_url)
        try:
            lay = Layout(namespace)
            subject = lay.history_subject("default", workflow_id)
            return await nc.jetstream().get_msg(lay.history_stream, 1, subject, next=True)
        finally:
            await nc.close()

    return run_sync(read())


def test_decisions_attempts_and_their_trace_headers(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    recorder = Recorder()
    app.add_observer(recorder)
    tries: dict[str, int] = {}

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.05))
    def charge(amount: float) -> str:
        tries["charge"] = tries.get("charge", 0) + 1
        if tries["charge"] == 1:
            raise ApplicationError("card declined once")
        return f"charged {amount}"

    @app.workflow
    async def child(ctx: Any, n: int) -> int:
        return n * 2

    @app.workflow
    async def order(ctx: Any, amount: float) -> dict[str, Any]:
        charged = await ctx.activity(charge, amount)
        await ctx.sleep(0.05)
        approved = await ctx.wait_signal("approve")
        doubled = await ctx.child(child, 21, workflow_id="order-1-child")
        return {"charged": charged, "approved": approved, "doubled": doubled}

    with WorkerThread(app):
        handle = order.start(10.0, workflow_id="order-1")
        fired = lambda: [e for e in handle.history() if e.type == "TimerFired"]  # noqa: E731
        wait_until(lambda: len(fired()) == 2, what="the retry's timer and the sleep's")
        handle.signal("approve", True)
        assert handle.result(timeout=30) == {
            "charged": "charged 10.0",
            "approved": True,
            "doubled": 42,
        }

    # The start carried the trace context in its headers, only the W3C names of bounded size,
    # and not in its payload.
    first = first_history_message(nats_url, namespace, "order-1")
    assert first.headers["traceparent"] == START
    assert "x-not-carried" not in first.headers and "tracestate" not in first.headers
    assert START.encode() not in first.data
    assert [s.workflow_id for s in recorder.starts] == ["order-1"]  # the child: by its parent

    tasks = recorder.of("order-1")
    assert all(t.trace == {"traceparent": START} for t in tasks)
    assert all(t.workflow_type == "order" and t.task_queue == "default" for t in tasks)
    inputs = [[(i.kind, i.name, i.failed) for i in t.inputs] for t in tasks]
    assert inputs == [
        [("start", "order", False)],
        [("activity", "charge", True)],  # the decision: retry after a backoff timer
        [("timer", "retry", False)],  # the decision: the second attempt
        [("activity", "charge", False)],
        [("timer", "sleep", False), ("signal", "approve", False)],  # the sleep, then the wait
        [("child", "order-1-child", False), ("child", "order-1-child", False)],  # started, ended
    ], inputs
    assert [t.status for t in tasks][-1] == "completed" and all(
        t.status is None for t in tasks[:-1]
    )
    assert all(t.began_ns <= t.ended_ns for t in tasks)
    timer = next(i for t in tasks for i in t.inputs if i.kind == "timer" and i.name == "sleep")
    assert timer.began_ms is not None and timer.at_ms - timer.began_ms >= 50

    # Each attempt carried the decision's trace headers, and was told its outcome.
    attempts = [(a.activity, a.attempt, outcome) for a, outcome in recorder.attempts]
    assert attempts == [("charge", 1, "failed"), ("charge", 2, "completed")]
    # (the Recorder's n-th decision of all workflows has span id n: those that scheduled them)
    assert [a.trace for a, _ in recorder.attempts] == [
        {"traceparent": f"00-0af7651916cd43dd8448eb211c80319c-{n:016x}-01"} for n in (1, 3)
    ]

    # The child's start carried its parent's decision's trace headers.
    (child_first_task, *_) = recorder.of("order-1-child")
    assert child_first_task.trace["traceparent"] != START
    assert child_first_task.trace["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


def test_a_replay_reports_no_step_again(make_app: Any) -> None:
    """A worker that did not cache the workflow replays its history: only the decision it
    appends is reported, with only the fact it answers."""
    app = make_app()
    recorder = Recorder()
    app.add_observer(recorder)

    @app.activity
    def note(text: str) -> str:
        return text.upper()

    @app.workflow
    async def waits(ctx: Any) -> str:
        first = await ctx.activity(note, await ctx.wait_signal("one"))
        second = await ctx.wait_signal("two")
        return f"{first} {second}"

    with WorkerThread(app):
        handle = waits.start(workflow_id="w-1")
        handle.signal("one", "a")
        done = lambda: any(e.type == "ActivityCompleted" for e in handle.history())  # noqa: E731
        wait_until(done, what="the activity's completion")
    with WorkerThread(app):  # a new worker: nothing cached
        handle.signal("two", "b")
        assert handle.result(timeout=30) == "A b"
    tasks = recorder.of("w-1")
    assert [[i.kind for i in t.inputs] for t in tasks] == [
        ["start", "signal"],
        ["activity", "signal"],  # what the first worker applied but decided nothing on
    ]
    assert [t.cache for t in tasks] == ["hit", "replay"]
    assert [t.status for t in tasks] == [None, "completed"]


def test_an_observer_that_raises_harms_nothing(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    class Broken(Observer):
        def start(self, start: ObservedStart) -> Mapping[str, str]:
            raise RuntimeError("broken start hook")

        def workflow_task(self, task: ObservedTask) -> Mapping[str, str]:
            raise RuntimeError("broken task hook")

    app.add_observer(Broken())

    @app.workflow
    async def hello(ctx: Any) -> str:
        return "hello"

    with WorkerThread(app):
        assert hello.start().result(timeout=30) == "hello"
    assert "broken start hook" in caplog.text and "broken task hook" in caplog.text
