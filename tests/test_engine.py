"""The replay engine on plain record lists: no NATS, no clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dfcore.core import _history as h
from dfcore.core._definitions import RetryPolicy
from dfcore.core._errors import ActivityError, NondeterminismError, UnregisteredWorkflowError

from .enginekit import History, kinds


def charge(customer: str, amount: float) -> dict[str, Any]: ...
def ship(charge: dict[str, Any]) -> dict[str, Any]: ...
def send_email(to: str) -> None: ...
def refund(charge: dict[str, Any]) -> None: ...


async def order(ctx: Any, customer: str, amount: float) -> dict[str, Any]:
    c = await ctx.activity(charge, customer, amount)
    s = await ctx.activity(ship, c)
    return {"charge_id": c["id"], "tracking_id": s["tracking"]}


def order_sync(ctx: Any, customer: str, amount: float) -> dict[str, Any]:
    c = ctx.activity(charge, customer, amount)
    s = ctx.activity(ship, c)
    return {"charge_id": c["id"], "tracking_id": s["tracking"]}


def run_order(hist: History, workflow: str = "order") -> None:
    run = hist.new_run()
    hist.start(workflow, "bob", 10.0)
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.ACTIVITY_SCHEDULED]
    assert cmds[0]["activity"] == "charge" and cmds[0]["args"] == ["bob", 10.0]
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "ch_1"})
    cmds = hist.decide(run)
    assert [(c["activity"], c["args"]) for c in cmds] == [("ship", [{"id": "ch_1"}])]
    hist.fact(h.ACTIVITY_COMPLETED, seq=2, attempt=1, result={"tracking": "tr_9"})
    cmds = hist.decide(run)
    assert cmds == [
        {"t": h.WORKFLOW_COMPLETED, "result": {"charge_id": "ch_1", "tracking_id": "tr_9"}}
    ]
    assert run.closed


@pytest.mark.parametrize("workflow", ["order", "order_sync"])
def test_order_runs_step_by_step(workflow: str) -> None:
    run_order(History(order, order_sync), workflow)


@pytest.mark.parametrize("workflow", ["order", "order_sync"])
def test_full_replay_produces_no_new_commands(workflow: str) -> None:
    hist = History(order, order_sync)
    run_order(hist, workflow)
    fresh = hist.new_run()
    fresh.apply(hist.records)
    assert fresh.pending_commands() == []
    assert fresh.closed


def test_replay_of_a_partial_history_continues_where_it_left_off() -> None:
    hist = History(order)
    run = hist.new_run()
    hist.start("order", "bob", 10.0)
    hist.decide(run)
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "ch_1"})
    fresh = hist.new_run()  # a cache miss: the new fact arrives at another worker
    cmds = hist.decide(fresh)
    assert [c["activity"] for c in cmds] == ["ship"]


def test_duplicate_completion_is_ignored() -> None:
    hist = History(order)
    run = hist.new_run()
    hist.start("order", "bob", 10.0)
    hist.decide(run)
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "ch_1"})
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "ch_DUP"})
    cmds = hist.decide(run)
    assert cmds[0]["args"] == [{"id": "ch_1"}]
    assert len(cmds) == 1


def test_a_completion_for_an_attempt_never_scheduled_is_ignored() -> None:
    hist = History(order)
    run = hist.new_run()
    hist.start("order", "bob", 10.0)
    hist.decide(run)  # schedules charge, attempt 1
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=7, result={"id": "ch_FORGED"})
    assert hist.decide(run) == []  # still waiting for attempt 1
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "ch_1"})
    assert hist.decide(run)[0]["args"] == [{"id": "ch_1"}]


def test_changed_code_raises_nondeterminism_naming_both_sides() -> None:
    hist = History(order)
    run_order(hist)

    async def order_v2(ctx: Any, customer: str, amount: float) -> Any:  # redeployed, changed
        c = await ctx.activity(charge, customer, amount)
        await ctx.activity(send_email, customer)
        return c

    order_v2.__name__ = "order"
    changed = History(order_v2)
    changed.records = hist.records
    with pytest.raises(NondeterminismError) as info:
        changed.new_run().apply(hist.records)
    err = info.value
    assert err.workflow_id == "wf-1" and err.step == 2
    assert "'ship'" in err.recorded and "'send_email'" in err.produced


def test_removed_step_is_nondeterminism() -> None:
    hist = History(order)
    run_order(hist)

    async def order_v3(ctx: Any, customer: str, amount: float) -> Any:
        return await ctx.activity(charge, customer, amount)

    order_v3.__name__ = "order"
    changed = History(order_v3)
    with pytest.raises(NondeterminismError) as info:
        changed.new_run().apply(hist.records)
    assert "'ship'" in info.value.recorded


def test_retry_uses_a_durable_backoff_timer() -> None:
    async def wf(ctx: Any) -> Any:
        return await ctx.activity(ship, {}, retry=RetryPolicy(max_attempts=3, initial_interval=2))

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=1, error={"type": "IOError", "message": "x"})
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.TIMER_STARTED]
    assert cmds[0]["purpose"] == "retry" and cmds[0]["duration"] == 2.0
    hist.fact(h.TIMER_FIRED, timer=cmds[0]["timer"])
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.ACTIVITY_SCHEDULED] and cmds[0]["attempt"] == 2
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=2, error={"type": "IOError", "message": "y"})
    cmds = hist.decide(run)
    assert cmds[0]["duration"] == 4.0  # backoff 2x
    # replay of everything so far matches
    fresh = hist.new_run()
    fresh.apply(hist.records)
    assert fresh.pending_commands() == []


def test_non_retryable_failure_reaches_the_workflow_as_activity_error() -> None:
    seen: list[ActivityError] = []

    async def wf(ctx: Any) -> Any:
        try:
            return await ctx.activity(charge, "bob", 1.0)
        except ActivityError as exc:
            seen.append(exc)
            raise

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    error = {"type": "CardDeclined", "message": "no funds", "non_retryable": True}
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=1, error=error)
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.WORKFLOW_FAILED]
    assert cmds[0]["error"]["type"] == "ActivityError"
    assert seen[0].cause_type == "CardDeclined" and seen[0].cause_message == "no funds"
    assert seen[0].attempts == 1


def test_exhausted_retries_fail_the_activity() -> None:
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.activity(ship, {}, retry=RetryPolicy(max_attempts=2, initial_interval=0))
        except ActivityError as exc:
            return exc.attempts

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=1, error={"type": "E", "message": "1"})
    assert kinds(hist.decide(run)) == [h.ACTIVITY_SCHEDULED]  # zero backoff: no timer
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=2, error={"type": "E", "message": "2"})
    assert hist.decide(run) == [{"t": h.WORKFLOW_COMPLETED, "result": 2}]


def test_sleep_is_a_durable_timer_and_now_follows_history() -> None:
    times = []

    async def wf(ctx: Any) -> Any:
        times.append(ctx.now())
        await ctx.sleep(30)
        times.append(ctx.now())
        return "woke"

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.TIMER_STARTED] and cmds[0]["duration"] == 30
    hist.fact(h.TIMER_FIRED, timer=cmds[0]["timer"], advance_ms=30_000)
    assert hist.decide(run)[0]["result"] == "woke"
    assert (times[1] - times[0]).total_seconds() == pytest.approx(30.01, abs=0.1)


def test_signals_are_buffered_and_wait_signal_times_out_durably() -> None:
    async def wf(ctx: Any) -> Any:
        first = await ctx.wait_signal("approve")
        try:
            await ctx.wait_signal("second", timeout=5)
        except TimeoutError:
            return [first, "timed out"]

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.fact(h.SIGNAL_RECEIVED, name="approve", payload={"by": "ann"})
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.TIMER_STARTED]
    assert cmds[0]["label"] == "signal 'second' timeout"  # what the history table shows
    hist.fact(h.TIMER_FIRED, timer=cmds[0]["timer"])
    assert hist.decide(run)[0]["result"] == [{"by": "ann"}, "timed out"]


def test_a_signal_after_a_wait_timed_out_is_kept_for_the_next_wait() -> None:
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.wait_signal("go", timeout=5)
        except TimeoutError:
            pass
        await ctx.sleep(1)  # a plain timer: no label carried over from the wait
        return await ctx.wait_signal("go")

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    [wait] = hist.decide(run)
    hist.fact(h.TIMER_FIRED, timer=wait["timer"])
    [sleep] = hist.decide(run)
    assert "label" not in sleep
    hist.fact(h.SIGNAL_RECEIVED, name="go", payload=7)
    hist.fact(h.TIMER_FIRED, timer=sleep["timer"])
    assert hist.decide(run)[0]["result"] == 7


def test_cancellation_lets_the_workflow_compensate() -> None:
    async def wf(ctx: Any) -> Any:
        c = await ctx.activity(charge, "bob", 5.0)
        try:
            await ctx.activity(ship, c)
        except asyncio.CancelledError:
            await ctx.activity(refund, c)
            raise

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result={"id": "c"})
    hist.decide(run)
    hist.fact(h.CANCEL_REQUESTED)
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.ACTIVITY_CANCEL_REQUESTED, h.ACTIVITY_SCHEDULED]
    assert cmds[1]["activity"] == "refund"
    hist.fact(h.ACTIVITY_COMPLETED, seq=3, attempt=1, result=None)
    assert kinds(hist.decide(run)) == [h.WORKFLOW_CANCELLED]
    fresh = hist.new_run()
    fresh.apply(hist.records)
    assert fresh.closed and fresh.pending_commands() == []


def test_parallel_activities_are_one_decision() -> None:
    async def wf(ctx: Any) -> Any:
        return await ctx.gather(ctx.activity(charge, "a", 1.0), ctx.activity(charge, "b", 2.0))

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    cmds = hist.decide(run)
    assert [c["args"][0] for c in cmds] == ["a", "b"]
    hist.fact(h.ACTIVITY_COMPLETED, seq=2, attempt=1, result="B")
    assert hist.decide(run) == []
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result="A")
    assert hist.decide(run)[0]["result"] == ["A", "B"]


def test_random_and_uuid_are_replay_safe() -> None:
    async def wf(ctx: Any) -> Any:
        value = (ctx.random().random(), str(ctx.uuid4()))
        await ctx.sleep(1)
        return value

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    cmds = hist.decide(run)
    hist.fact(h.TIMER_FIRED, timer=cmds[0]["timer"])
    result = hist.decide(run)[0]["result"]
    replayed: list[Any] = []

    async def wf2(ctx: Any) -> Any:
        replayed.append((ctx.random().random(), str(ctx.uuid4())))
        await ctx.sleep(1)
        return replayed[-1]

    other = History(wf2)
    other.records = [
        h.Record(r.seq, {**r.body, "workflow": "wf2"} if r.seq == 1 else r.body)
        for r in hist.records
    ]
    other.new_run().apply(other.records)
    assert replayed[0] == result


def test_an_unknown_workflow_decides_nothing_and_says_why() -> None:
    """The worker hands the task back (a worker that has the workflow may come): no command."""
    hist = History()
    run = hist.new_run()
    hist.start("nope")
    with pytest.raises(UnregisteredWorkflowError, match="'nope' is not registered") as info:
        hist.decide(run)
    assert "it waits until they have it" in str(info.value)
    assert run.pending_commands() == []


def test_an_unknown_workflow_can_be_cancelled() -> None:
    hist = History()
    run = hist.new_run()
    hist.start("nope")
    hist.fact(h.CANCEL_REQUESTED, reason="typo in the name")
    assert kinds(hist.decide(run)) == [h.WORKFLOW_CANCELLED]


def test_execution_timeout_ends_the_workflow() -> None:
    async def wf(ctx: Any) -> Any:
        await ctx.wait_signal("never")

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf", execution_timeout=60)
    cmds = hist.decide(run)
    assert cmds[0]["purpose"] == "execution_timeout"
    hist.fact(h.TIMER_FIRED, timer="x")
    assert kinds(hist.decide(run)) == [h.WORKFLOW_TIMED_OUT]


def test_logger_is_silent_during_replay(caplog: pytest.LogCaptureFixture) -> None:
    async def wf(ctx: Any) -> Any:
        ctx.logger.warning("charging")
        await ctx.activity(charge, "bob", 1.0)
        ctx.logger.warning("done")

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result=None)
    hist.decide(run)
    assert [r.getMessage().split("] ")[1] for r in caplog.records] == ["charging", "done"]
    caplog.clear()
    hist.new_run().apply(hist.records)
    assert caplog.records == []


def test_schedule_to_close_fails_the_activity_without_more_retries() -> None:
    async def wf(ctx: Any) -> Any:
        try:
            await ctx.activity(ship, {}, schedule_to_close=10)
        except ActivityError as exc:
            return [exc.cause_type, exc.cause_message]

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.ACTIVITY_SCHEDULED, h.TIMER_STARTED]
    assert cmds[1]["purpose"] == "schedule_to_close"
    hist.fact(h.TIMER_FIRED, timer=cmds[1]["timer"], advance_ms=10_000)
    assert hist.decide(run)[0]["result"] == ["TimeoutError", "schedule_to_close timeout exceeded"]
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result="late")  # ignored
    assert hist.decide(run) == []


def test_a_retry_that_would_pass_schedule_to_close_is_not_made() -> None:
    async def wf(ctx: Any) -> Any:
        policy = RetryPolicy(max_attempts=10, initial_interval=5)
        try:
            await ctx.activity(ship, {}, retry=policy, schedule_to_close=3)
        except ActivityError as exc:
            return exc.attempts

    hist = History(wf)
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=1, error={"type": "E", "message": "x"})
    assert hist.decide(run)[0]["result"] == 1


def _retrying(policy: RetryPolicy, schedule_to_close: float | None = None) -> Any:
    async def wf(ctx: Any) -> Any:
        return await ctx.activity(ship, {}, retry=policy, schedule_to_close=schedule_to_close)

    return wf


def test_changing_retry_options_is_safe_for_running_workflows() -> None:
    hist = History(_retrying(RetryPolicy(max_attempts=5, initial_interval=5)))
    run = hist.new_run()
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_FAILED, seq=1, attempt=1, error={"type": "E", "message": "x"})
    assert hist.decide(run)[0]["duration"] == 5.0  # waiting between attempts now
    # a deploy changes the policy and adds a schedule-to-close timeout
    changed = History(_retrying(RetryPolicy(max_attempts=1, initial_interval=0), 60))
    fresh = changed.new_run()
    fresh.apply(hist.records)  # no NondeterminismError
    assert fresh.pending_commands() == []
    assert fresh.activity(1).retry.max_attempts == 5  # type: ignore[union-attr]


def test_start_arguments_of_the_wrong_type_fail_the_workflow() -> None:
    async def typed(ctx: Any, n: int) -> int:
        return n

    hist = History(typed)
    run = hist.new_run()
    hist.start("typed", "seven")
    cmds = hist.decide(run)
    assert kinds(cmds) == [h.WORKFLOW_FAILED]
    assert cmds[0]["error"]["type"] == "SerializationError"
    assert "'n'" in cmds[0]["error"]["message"]


def test_a_result_of_the_wrong_type_raises_at_the_await() -> None:
    def count() -> int: ...

    async def wf(ctx: Any) -> Any:
        try:
            await ctx.activity(count)
        except Exception as exc:
            return type(exc).__name__

    def lookup(ref: Any) -> Any:
        from dfcore.core._definitions import ActivityOptions

        return "count", ActivityOptions(), int

    hist = History(wf)
    run = hist.new_run(lookup)
    hist.start("wf")
    hist.decide(run)
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result="many")
    assert hist.decide(run)[0]["result"] == "SerializationError"


def test_a_decision_split_over_several_records_replays() -> None:
    async def fan_out(ctx: Any) -> Any:
        return await ctx.gather(*(ctx.activity(charge, str(i), 1.0) for i in range(4)))

    hist = History(fan_out)
    run = hist.new_run()
    hist.start("fan_out")
    run.apply(hist.records)
    cmds = run.pending_commands()
    for i, part in enumerate((cmds[:2], cmds[2:])):  # as a worker does when it is too big
        body: dict[str, Any] = {"t": h.DECIDED, "ts": hist.ts, "cmds": part}
        if i == 0:
            body["more"] = True
        record = h.Record(len(hist.records) + 1, body)
        hist.records.append(record)
        run.apply([record])
    assert run.pending_commands() == []
    fresh = hist.new_run()
    fresh.apply(hist.records)
    assert fresh.pending_commands() == []


def test_plain_def_workflow_runs_activities_in_parallel() -> None:
    def fan(ctx: Any) -> list[Any]:
        return ctx.gather(
            ctx.activity_async(charge, "a", 1.0), ctx.activity_async(charge, "b", 2.0)
        )

    hist = History(fan)
    run = hist.new_run()
    hist.start("fan")
    assert [c["args"][0] for c in hist.decide(run)] == ["a", "b"]
    hist.fact(h.ACTIVITY_COMPLETED, seq=2, attempt=1, result="B")
    hist.fact(h.ACTIVITY_COMPLETED, seq=1, attempt=1, result="A")
    assert hist.decide(run)[0]["result"] == ["A", "B"]


def test_one_backoff_formula_serves_activities_redeliveries_and_the_outbox() -> None:
    from dfcore.outbox import MAX_RETRY_DELAY
    from dfcore.outbox import retry_delay as outbox_delay
    from dfcore.worker._delivery import retry_delay as redelivery_delay

    policy = RetryPolicy(max_attempts=0, initial_interval=1.0, backoff=2.0, max_interval=100.0)
    assert [policy.delay(n) for n in (1, 2, 3, 8)] == [1.0, 2.0, 4.0, 100.0]
    assert policy.delay(5000) == 100.0  # an unlimited policy's thousandth failure: no overflow
    assert [redelivery_delay(n) for n in (1, 2, 3, 7, 10**6)] == [1.0, 2.0, 4.0, 60.0, 60.0]
    assert [outbox_delay(n) for n in (0, 1, 2, 3)] == [2.0, 2.0, 4.0, 8.0]
    assert outbox_delay(10**6) == MAX_RETRY_DELAY
