"""End to end, in process: a real nats-server, a worker on its own thread, the real client."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import (
    ActivityError,
    App,
    ApplicationError,
    DFConnectionError,
    PayloadTooLargeError,
    RegistrationError,
    RetryPolicy,
    SerializationError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowStatus,
    activity,
)
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._server import free_port

from .apps.orders import ORDER_EVENTS, build_app
from .workerkit import WorkerThread, wait_until


def close(app: App) -> None:
    run_sync(app.aclose())


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the test apps' activities append one line to per execution."""
    path = tmp_path / "effects.txt"
    monkeypatch.setenv("DF_TEST_SIDE_EFFECTS", str(path))
    return path


@pytest.fixture
def orders(nats_url: str, namespace: str, effects: Path) -> Iterator[App]:
    """The order app on this test's namespace, with a worker running."""
    app = build_app(nats_url=nats_url, namespace=namespace)
    with WorkerThread(app):
        yield app
    close(app)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- the order workflow ---------------------------------------------------------------------


@pytest.mark.parametrize("workflow", ["order", "order_sync"])
def test_order_from_sync_client(orders: App, effects: Path, workflow: str) -> None:
    handle = orders.start(workflow, "bob", 10.0, 2, workflow_id=f"o-{workflow}")
    result = handle.result(timeout=30)
    assert result["charge_id"].startswith("ch_") and result["tracking_id"].startswith("tr_")
    assert handle.status().status == "completed"
    types = [e.type for e in handle.history()]
    assert types == ORDER_EVENTS
    assert sorted(line.split()[0] for line in lines(effects)) == ["charge", "ship"]


async def test_order_from_async_client(orders: App) -> None:
    order = orders.workflows["order"]
    from dfcore import WorkflowFunction

    fn: WorkflowFunction[..., dict[str, Any]] = WorkflowFunction(orders, order)
    handles = [await fn.astart("ann", 5.0, 1) for _ in range(5)]
    results = await asyncio.gather(*(h.aresult(timeout=30) for h in handles))
    assert len({r["charge_id"] for r in results}) == 5
    await orders.aclose()


def test_delay_is_start(orders: App) -> None:
    from dfcore import WorkflowFunction

    fn: WorkflowFunction[..., Any] = WorkflowFunction(orders, orders.workflows["order"])
    assert fn.delay("c", 1.0, 1).result(timeout=30)["tracking_id"]


# -- idempotent start -----------------------------------------------------------------------


def test_start_with_same_id_runs_once(orders: App, effects: Path) -> None:
    first = orders.start("order", "dup", 1.0, 1, workflow_id="order-42")
    second = orders.start("order", "dup", 1.0, 1, workflow_id="order-42")
    assert first == second
    assert first.result(timeout=30) == second.result(timeout=30)
    third = orders.start("order", "dup", 1.0, 1, workflow_id="order-42")  # after it finished
    assert third.result(timeout=30) == first.result(timeout=30)
    assert [ln for ln in lines(effects) if ln.startswith("charge")] == ["charge dup"]
    with pytest.raises(WorkflowAlreadyStartedError, match="order-42"):
        orders.start("order", "dup", 1.0, 1, workflow_id="order-42", if_exists="fail")


# -- retries and timeouts -------------------------------------------------------------------


def test_retries_with_durable_backoff(make_app: Any) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.activity(retry=RetryPolicy(max_attempts=4, initial_interval=0.05, backoff=2))
    def flaky() -> str:
        attempts.append(activity.info().attempt)
        if len(attempts) < 3:
            raise ConnectionError(f"try {len(attempts)}")
        return "ok"

    @app.workflow
    async def wf(ctx: Any) -> str:
        return await ctx.activity(flaky)

    with WorkerThread(app):
        handle = app.start("wf")
        assert handle.result(timeout=30) == "ok"
    assert attempts == [1, 2, 3]
    timers = [e.attributes for e in handle.history() if e.type == "TimerStarted"]
    assert [t["duration"] for t in timers] == [0.05, 0.1]
    assert all(t["purpose"] == "retry" for t in timers)


def test_non_retryable_error_is_not_retried(make_app: Any) -> None:
    app = make_app()
    calls: list[int] = []

    @app.activity(retry=RetryPolicy(max_attempts=5, initial_interval=0.01))
    def decline() -> None:
        calls.append(1)
        raise ApplicationError("card declined", type="CardDeclined", non_retryable=True)

    @app.workflow
    async def wf(ctx: Any) -> dict[str, Any]:
        try:
            await ctx.activity(decline)
        except ActivityError as exc:
            return {"type": exc.cause_type, "message": exc.cause_message, "attempts": exc.attempts}
        return {}

    with WorkerThread(app):
        result = app.start("wf").result(timeout=30)
    assert result == {"type": "CardDeclined", "message": "card declined", "attempts": 1}
    assert calls == [1]


def test_non_retryable_type_in_policy(make_app: Any) -> None:
    app = make_app()

    @app.activity(
        retry=RetryPolicy(max_attempts=5, initial_interval=0.01, non_retryable=[KeyError])
    )
    def lookup() -> None:
        raise KeyError("sku")

    @app.workflow
    async def wf(ctx: Any) -> Any:
        await ctx.activity(lookup)

    with WorkerThread(app), pytest.raises(WorkflowFailureError) as info:
        app.start("wf").result(timeout=30)
    assert info.value.status == "failed" and info.value.cause_type == "ActivityError"
    assert "KeyError" in info.value.cause_message and "1 attempt" in info.value.cause_message


def test_hung_activity_is_abandoned_after_start_to_close_and_retried(make_app: Any) -> None:
    app = make_app()
    release = threading.Event()
    attempts: list[int] = []

    @app.activity(timeout=0.3, retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    def sometimes_hangs() -> int:
        attempt = activity.info().attempt
        attempts.append(attempt)
        if attempt == 1:
            release.wait(30)  # hangs well past its timeout
        return attempt

    @app.workflow
    async def wf(ctx: Any) -> int:
        return await ctx.activity(sometimes_hangs)

    try:
        with WorkerThread(app):
            handle = app.start("wf")
            assert handle.result(timeout=30) == 2
    finally:
        release.set()
    failed = [e.attributes for e in handle.history() if e.type == "ActivityFailed"]
    assert failed[0]["error"]["timeout"] == "start_to_close"


def test_heartbeat_timeout_and_details_reach_next_attempt(make_app: Any) -> None:
    app = make_app()
    release = threading.Event()
    seen: list[Any] = []

    @app.activity(heartbeat_timeout=0.3, retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    def import_rows() -> int:
        info = activity.info()
        seen.append(info.heartbeat_details)
        if info.attempt == 1:
            activity.heartbeat(41)
            release.wait(30)  # stops heartbeating
        return 42

    @app.workflow
    async def wf(ctx: Any) -> int:
        return await ctx.activity(import_rows)

    try:
        with WorkerThread(app):
            handle = app.start("wf")
            assert handle.result(timeout=30) == 42
    finally:
        release.set()
    assert seen == [None, 41]
    failed = [e.attributes for e in handle.history() if e.type == "ActivityFailed"]
    assert failed[0]["error"]["timeout"] == "heartbeat"


# -- timers, signals, cancellation, parallelism ---------------------------------------------


def test_durable_timer(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def wf(ctx: Any) -> float:
        before = ctx.now()
        await ctx.sleep(0.5)
        return (ctx.now() - before).total_seconds()

    with WorkerThread(app):
        handle = app.start("wf")
        waited = handle.result(timeout=30)
    assert waited >= 0.5
    assert [e.type for e in handle.history()].count("TimerFired") == 1


def test_signal(orders: App) -> None:
    handle = orders.start("order_with_approval", "sig", 3.0)
    handle.signal("approve", {"by": "manager"})
    result = handle.result(timeout=30)
    assert result["approved_by"] == {"by": "manager"}


def test_wait_signal_timeout(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def wf(ctx: Any) -> str:
        try:
            return await ctx.wait_signal("never", timeout=0.2)
        except TimeoutError:
            return "timed out"

    with WorkerThread(app):
        assert app.start("wf").result(timeout=30) == "timed out"


def test_cancellation_with_compensation(make_app: Any) -> None:
    app = make_app()
    started = threading.Event()
    refunded: list[str] = []

    @app.activity
    def charge() -> str:
        return "ch_1"

    @app.activity(heartbeat_timeout=5)
    def ship(charge_id: str) -> None:
        started.set()
        while True:  # a long job that heartbeats; it learns of the cancellation there
            activity.heartbeat()
            time.sleep(0.02)

    @app.activity
    def refund(charge_id: str) -> None:
        refunded.append(charge_id)

    @app.workflow
    async def wf(ctx: Any) -> None:
        charge_id = await ctx.activity(charge)
        try:
            await ctx.activity(ship, charge_id)
        except asyncio.CancelledError:
            await ctx.activity(refund, charge_id)
            raise

    with WorkerThread(app) as worker:
        handle = app.start("wf")
        assert started.wait(30)
        handle.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            handle.result(timeout=30)
        assert info.value.status == "cancelled"
        assert refunded == ["ch_1"]
        runner = worker.worker._activity_runner  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while runner.running and time.monotonic() < deadline:  # ship stopped at its heartbeat
            time.sleep(0.02)
        assert not runner.running


def test_parallel_activities(make_app: Any) -> None:
    app = make_app()
    both_running = threading.Barrier(2, timeout=10)

    @app.activity
    def part(n: int) -> int:
        both_running.wait()  # proves the two attempts run at the same time
        return n * 10

    @app.activity
    async def apart(n: int) -> int:
        return n + 1

    @app.workflow
    async def wf(ctx: Any) -> list[int]:
        a, b = await asyncio.gather(ctx.activity(part, 1), ctx.activity(part, 2))
        c, d = await ctx.gather(ctx.activity(apart, 1), ctx.activity(apart, 2))
        return [a, b, c, d]

    with WorkerThread(app):
        assert app.start("wf").result(timeout=30) == [10, 20, 2, 3]


# -- clear errors ---------------------------------------------------------------------------


def test_a_name_this_app_lacks_raises_at_the_call_with_the_nearest_name(orders: App) -> None:
    with pytest.raises(
        RegistrationError, match=r"no workflow named 'ordr' \(did you mean 'order'\?\)"
    ):
        orders.start("ordr", "ada", 10.0, 1)
    with pytest.raises(RegistrationError, match="order_with_approval"):  # it lists what it has
        orders.prepare_start("no_such_workflow")


def test_arguments_are_checked_against_the_workflow_at_the_call(orders: App) -> None:
    with pytest.raises(TypeError, match=r"workflow 'order' cannot be called with 2 argument"):
        orders.start("order", "ada", 10.0)
    with pytest.raises(TypeError, match=r"parameters are \(customer_id, amount, quantity\)"):
        orders.prepare_start("order", "ada", 10.0, 1, "extra")


def test_a_workflow_no_worker_has_waits_as_failing_and_runs_once_one_has_it(
    make_app: Any,
) -> None:
    """The web deploy landed first: its App has a workflow the running workers do not."""
    web = make_app()

    @web.workflow
    async def welcome(ctx: Any, name: str) -> str:
        return f"welcome {name}"

    old = make_app()  # the workers of the previous deploy

    @old.workflow
    async def other(ctx: Any) -> None: ...

    handle = web.start(welcome, "ada")
    with WorkerThread(old):

        def failing() -> WorkflowStatus | None:
            status = handle.status()
            return status if status.status == "failing" else None

        status = wait_until(failing, what="the workflow to show as failing")
        assert status.failure is not None
        assert "UnregisteredWorkflowError: workflow 'welcome' is not registered" in status.failure
    with WorkerThread(web):  # the new deploy's workers
        assert handle.result(timeout=90) == "welcome ada"
    assert [event.type for event in handle.history()].count("WorkflowFailed") == 0


def test_unregistered_activity_fails_clearly(make_app: Any) -> None:
    app = make_app()

    def plain() -> None: ...

    @app.workflow
    async def uses_plain(ctx: Any) -> None:
        await ctx.activity(plain)

    @app.workflow
    async def uses_missing(ctx: Any) -> None:
        await ctx.activity(
            "missing_activity", retry=RetryPolicy(max_attempts=2, initial_interval=0)
        )

    with WorkerThread(app):
        with pytest.raises(WorkflowFailureError) as info:
            app.start("uses_plain").result(timeout=30)
        assert info.value.cause_type == "RegistrationError"
        assert "decorate it with @app.activity" in info.value.cause_message
        with pytest.raises(WorkflowFailureError) as info:
            app.start("uses_missing").result(timeout=30)
        assert "'missing_activity' is not registered" in info.value.cause_message


def test_unserializable_argument_is_named(orders: App) -> None:
    with pytest.raises(SerializationError, match="argument 2 of workflow 'order'"):
        orders.start("order", "x", object(), 1)


def test_oversized_payload_is_refused_before_publishing(orders: App) -> None:
    with pytest.raises(PayloadTooLargeError, match="max_payload"):
        orders.start("order", "x" * 2_000_000, 1.0, 1, workflow_id="too-big")
    from dfcore import WorkflowNotFoundError

    with pytest.raises(WorkflowNotFoundError):
        orders.get_handle("too-big").status()


def test_unreachable_nats_names_the_url() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    app = App("nowhere", nats_url=url, connect_timeout=0.5)
    with pytest.raises(DFConnectionError) as info:
        app.start("anything")
    assert url in str(info.value) and "dfcore -A yourmodule:app dev" in str(info.value)


def test_bad_activity_arguments_fail_at_the_call_site(make_app: Any) -> None:
    app = make_app()

    @app.activity
    def store(blob: Any) -> None: ...

    @app.workflow
    async def too_big(ctx: Any) -> str:
        try:
            await ctx.activity(store, "x" * 2_000_000)
        except PayloadTooLargeError as exc:
            return str(exc)
        return "sent?"

    @app.workflow
    async def unserializable(ctx: Any) -> None:
        await ctx.activity(store, 1, object())

    with WorkerThread(app):
        assert "max_payload" in app.start("too_big").result(timeout=30)
        with pytest.raises(WorkflowFailureError) as info:
            app.start("unserializable").result(timeout=30)
    assert info.value.cause_type == "SerializationError"
    assert "argument 2 of activity 'store'" in info.value.cause_message


def test_abandoned_sync_activities_do_not_starve_later_ones(make_app: Any) -> None:
    app = make_app(activity_concurrency=2)
    release = threading.Event()

    @app.activity(timeout=0.2, retry=RetryPolicy(max_attempts=1))
    def hang() -> None:
        release.wait(30)  # ignores its timeout: the thread stays busy

    @app.activity(timeout=5)
    def quick() -> str:
        return "ran"

    @app.workflow
    async def wf(ctx: Any) -> str:
        for _ in range(2):  # as many hung threads as the worker runs activities at once
            with contextlib.suppress(ActivityError):
                await ctx.activity(hang)
        return await ctx.activity(quick)

    try:
        with WorkerThread(app):
            assert app.start("wf").result(timeout=30) == "ran"
    finally:
        release.set()


def test_the_status_of_a_failed_workflow_carries_the_failure(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def refuses(ctx: Any) -> None:
        raise ApplicationError("out of stock", type="StockError")

    with WorkerThread(app):
        handle = app.start(refuses)
        with pytest.raises(WorkflowFailureError):
            handle.result(timeout=30)
    status = handle.status()
    assert (status.status, status.failure) == ("failed", "StockError: out of stock")


def test_a_workflow_taking_star_args_accepts_any_arguments(make_app: Any) -> None:
    from dfcore.core._call_args import check_call_args

    async def wrapper(*args: Any) -> None: ...  # ctx and the arguments alike

    check_call_args(wrapper, [1, 2, 3], skip_first=True, what="workflow 'wrapper'")
