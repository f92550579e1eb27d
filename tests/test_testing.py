"""dfcore.testing, as a user's test suite uses it: the pytest fixtures, env.run, time skipping.

Every timer here is a real durable timer on the real server; skipping fires it early through the
engine, so a workflow that sleeps 30 days ends at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dfcore import App, RetryPolicy, WorkflowFailureError
from dfcore.testing import WorkflowEnvironment

app = App("timeskip")
DAY = 24 * 3600.0
calls: list[str] = []


@app.activity
def note(text: str) -> str:
    calls.append(text)
    return text


@app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=3600.0))
def flaky(key: str) -> str:
    calls.append(key)
    if calls.count(key) < 3:
        raise RuntimeError(f"{key} failed")
    return key


@app.workflow
async def nap(ctx: Any, days: float) -> str:
    await ctx.sleep(days * DAY)
    return "rested"


@app.workflow
async def two_naps(ctx: Any, key: str) -> list[str]:
    await ctx.sleep(DAY)
    first = await ctx.activity(note, f"{key}: after one day")
    await ctx.sleep(DAY)
    return [first, await ctx.activity(note, f"{key}: after two days")]


@app.workflow
async def wait_or_give_up(ctx: Any) -> str:
    try:
        return str(await ctx.wait_signal("answer", timeout=7 * DAY))
    except TimeoutError:
        return "gave up"


@app.workflow
async def hourly_retries(ctx: Any, key: str) -> str:
    return str(await ctx.activity(flaky, key))


@pytest.fixture
def env(df_env: Callable[..., WorkflowEnvironment]) -> WorkflowEnvironment:
    calls.clear()
    return df_env(app)


async def test_a_thirty_day_sleep_ends_at_once_through_the_real_timer(
    env: WorkflowEnvironment,
) -> None:
    assert await env.run(nap, 30, workflow_id="nap-30") == "rested"
    events = [(e.type, e.attributes) for e in await app.get_handle("nap-30").ahistory()]
    [started] = [a for t, a in events if t == "TimerStarted"]
    assert started["duration"] == 30 * DAY
    assert [t for t, _ in events].count("TimerFired") == 1


async def test_timers_fire_in_their_order_between_activities(env: WorkflowEnvironment) -> None:
    result = await env.run(two_naps, "k")
    assert result == ["k: after one day", "k: after two days"]
    assert calls == ["k: after one day", "k: after two days"]


async def test_a_signal_wait_times_out_when_time_is_skipped(env: WorkflowEnvironment) -> None:
    assert await env.run(wait_or_give_up) == "gave up"


async def test_retry_backoff_timers_are_skipped_too(env: WorkflowEnvironment) -> None:
    assert await env.run(hourly_retries, "r") == "r"  # three attempts, an hour apart
    assert calls == ["r", "r", "r"]


async def test_the_execution_timeout_fires_before_a_longer_sleep(
    env: WorkflowEnvironment,
) -> None:
    with pytest.raises(WorkflowFailureError, match="timed"):
        await env.run(nap, 90, execution_timeout=60 * DAY)


async def test_skip_fires_the_timers_pending_now(env: WorkflowEnvironment) -> None:
    handle = await app.astart(two_naps, "s", workflow_id="skip-s")
    assert await env.skip() == 1  # the first day; the second sleep starts after it
    assert await env.skip() == 1
    assert await env.skip() == 0
    assert await handle.aresult(timeout=30) == ["s: after one day", "s: after two days"]


def test_without_time_skipping_a_timer_waits_its_time(
    df_env: Callable[..., WorkflowEnvironment],
) -> None:
    env = df_env(app, time_skipping=False)
    with pytest.raises(TimeoutError, match="did not end within"):
        env.run_sync(nap, 1, timeout=1.0)
    assert env.skip_sync() == 1  # on demand, still
