"""Schedules: cron in a time zone and intervals, declared in code or settings or made at runtime;
each time starts exactly one workflow, under an id from the schedule and the time, with no beat
process; overlap and catch-up policies; restarts of workers and of the server."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dfcore import App, ConfigurationError, DFError, RegistrationError, Settings
from dfcore.client._loopthread import run_sync
from dfcore.core import _schedules
from dfcore.core._cron import Cron, CronError
from dfcore.core._schedules import ScheduleSpec, plan
from dfcore.jetstream._server import EmbeddedServer
from tests.workerkit import WorkerThread, wait_until

BERLIN = ZoneInfo("Europe/Berlin")


def ms(text: str) -> int:
    """Epoch ms of an ISO time with its offset, such as ``2026-03-29T01:00:00+00:00``."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def utc(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


# -- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 25 * * *", "hour '25': 25 is out of range 0-23"),
        ("* * *", "has 3 fields; it needs 5"),
        ("0 3 * * funday", "day of week 'funday': not a number or name"),
        ("*/0 * * * *", "step '0' is not a positive number"),
        ("0 0 30 2 *", "never fires"),
        ("0 9-5 * * *", "range '9-5' runs backwards"),
    ],
)
def test_a_bad_cron_expression_is_refused_naming_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(CronError, match=problem.replace("*", r"\*")):
        Cron.parse(expression)


def test_both_day_fields_restricted_fire_on_either_as_in_cron() -> None:
    # Every Monday in February, and the 30th (which February never has): Mondays.
    mondays = Cron.parse("0 0 30 2 mon")
    assert utc(mondays.next_after(ms("2027-01-31T12:00:00+00:00"), ZoneInfo("UTC"))) == (
        "2027-02-01 00:00"
    )
    # A day field that starts with '*' restricts nothing: '*/2' leaves it to the weekday.
    assert Cron.parse("0 0 */2 * mon").any_day


def test_cron_fires_at_its_wall_clock_time_in_its_time_zone_summer_and_winter() -> None:
    nightly = Cron.parse("0 3 * * *")
    before_spring = nightly.next_after(ms("2026-03-28T12:00:00+00:00"), BERLIN)
    after_spring = nightly.next_after(before_spring, BERLIN)
    assert [utc(before_spring), utc(after_spring)] == ["2026-03-29 01:00", "2026-03-30 01:00"]
    weekdays = Cron.parse("30 9 * * mon-fri")
    friday = ms("2026-12-04T10:00:00+01:00")
    assert utc(weekdays.next_after(friday, BERLIN)) == "2026-12-07 08:30"  # Monday, 09:30 CET


def test_a_time_the_clocks_skip_fires_once_when_they_jump() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never happens.
    skipped = Cron.parse("30 2 * * *")
    assert utc(skipped.next_after(ms("2026-03-28T12:00:00+00:00"), BERLIN)) == "2026-03-29 01:00"
    half_hourly = Cron.parse("*/30 * * * *")
    at = ms("2026-03-29T00:15:00+00:00")  # 01:15 CET
    fired = []
    for _ in range(4):
        at = half_hourly.next_after(at, BERLIN)
        fired.append(utc(at))
    # 01:30 CET; 02:00 and 02:30 do not exist and fire together at the jump; 03:30 CEST ...
    assert fired == ["2026-03-29 00:30", "2026-03-29 01:00", "2026-03-29 01:30", "2026-03-29 02:00"]


def test_a_time_that_happens_twice_fires_once_the_first_time() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    twice = Cron.parse("30 2 * * *")
    first = twice.next_after(ms("2026-10-24T12:00:00+00:00"), BERLIN)
    assert utc(first) == "2026-10-25 00:30"
    assert utc(twice.next_after(first, BERLIN)) == "2026-10-26 01:30"  # the next day, CET


def test_an_interval_fires_at_whole_multiples_since_the_epoch() -> None:
    spec = ScheduleSpec("poll", "poll", every=timedelta(minutes=5))
    assert utc(spec.next_after(ms("2026-12-03T10:02:10+00:00"))) == "2026-12-03 10:05"
    assert spec.every_seconds == 300


# -- specs and where they are written ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"cron": "0 3 * * *", "every": 60}, "either cron= or every="),
        ({}, "either cron= or every="),
        ({"cron": "0 3 * * *", "timezone": "Mars/Base"}, "time zone 'Mars/Base' is unknown"),
        ({"cron": "0 3 * * *", "overlap": "queue"}, "overlap must be one of skip, buffer_one"),
        ({"cron": "0 3 * * *", "catch_up": "some"}, "catch_up must be one of all, last, none"),
        ({"every": 0.5}, "every must be from 1 second"),
        ({"every": 60, "timezone": "Europe/Berlin"}, "an every= interval takes no timezone"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        ScheduleSpec("nightly", "report", **fields)
    with pytest.raises(ConfigurationError, match=r"schedule id 'a\.b' must be 1 to 64 letters"):
        ScheduleSpec("a.b", "report", cron="0 3 * * *")


def test_the_schedules_setting_is_checked_where_it_is_written(monkeypatch: Any) -> None:
    good = {"nightly": {"workflow": "report", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}}
    [spec] = Settings(schedules=good).schedules
    assert (spec.schedule_id, spec.workflow, spec.timezone) == (
        "nightly",
        "report",
        "Europe/Berlin",
    )
    monkeypatch.setenv("DF_SCHEDULES", '{"poll": {"workflow": "poll", "every": 60}}')
    assert [s.schedule_id for s in Settings.from_environment().schedules] == ["poll"]
    monkeypatch.setenv("DF_SCHEDULES", '{"poll": {"workflow": "poll", "cron": "61 * * * *"}}')
    with pytest.raises(ConfigurationError, match="environment variable DF_SCHEDULES is invalid"):
        Settings.from_environment()
    with pytest.raises(ConfigurationError, match=r"without \['cronn'\]: its fields are"):
        Settings(schedules={"x": {"workflow": "w", "cronn": "0 3 * * *"}})


def test_the_decorator_goes_above_the_workflow_and_an_id_is_declared_once() -> None:
    app = App("decorated")

    @app.schedule("nightly", cron="0 3 * * *", timezone="Europe/Berlin")
    @app.workflow
    async def report(ctx: Any) -> None:
        return None

    assert [(s.schedule_id, s.workflow) for s in app.registry.schedules] == [("nightly", "report")]
    with pytest.raises(RegistrationError, match=r"put it above @app\.workflow"):
        app.schedule("other", every=60)(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="'nightly' is declared twice"):
        app.schedule("nightly", cron="0 4 * * *")(report)
    with pytest.raises(ConfigurationError, match="hour '24'"):
        app.schedule("late", cron="0 24 * * *")(report)


# -- the policies -----------------------------------------------------------------------------


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec("s", "w", every=1, **fields)


NOW = 1_000_000_000_000
LATE = [NOW - 300_000, NOW - 200_000, NOW - 100_000]  # missed while nothing ran


@pytest.mark.parametrize(
    ("catch_up", "started"),
    [("all", [*LATE, NOW]), ("last", [NOW]), ("none", [NOW])],
)
def test_catch_up_decides_which_missed_times_start(catch_up: str, started: list[int]) -> None:
    decision = plan(spec(catch_up=catch_up, overlap="allow"), [*LATE, NOW], NOW, False, None)
    assert decision.start == started
    assert sorted(decision.skipped + decision.start) == [*LATE, NOW]


def test_a_buffered_time_left_over_when_nothing_runs_is_dropped() -> None:
    decision = plan(spec(overlap="buffer_one"), [NOW], NOW, False, LATE[0])
    assert (decision.start, decision.buffered_ms) == ([NOW], None)


def test_missed_times_alone_start_the_last_of_them_by_default() -> None:
    assert plan(spec(), LATE, NOW, False, None).start == [LATE[-1]]


@pytest.mark.parametrize(
    ("overlap", "running", "started", "buffered"),
    [
        ("skip", True, [], None),
        ("skip", False, [NOW], None),
        ("buffer_one", True, [], NOW),
        ("allow", True, [NOW], None),
    ],
)
def test_overlap_decides_what_a_time_does_while_the_last_one_runs(
    overlap: str, running: bool, started: list[int], buffered: int | None
) -> None:
    decision = plan(spec(overlap=overlap), [NOW], NOW, running, None)
    assert (decision.start, decision.buffered_ms) == (started, buffered)


# -- on a real server, with real workers -----------------------------------------------------


@pytest.fixture
def sched_app(nats_url: str, namespace: str) -> Any:
    app = App("sched", nats_url=nats_url, namespace=namespace)

    @app.workflow
    async def tick(ctx: Any, label: str) -> str:
        return f"{label}@{ctx.info.workflow_id}"

    @app.workflow
    async def slow(ctx: Any) -> str:
        return str(await ctx.wait_signal("done"))

    yield app
    run_sync(app.aclose())


def started_ids(app: App, schedule_id: str) -> list[str]:
    return sorted(
        w.workflow_id
        for w in app.list_workflows(limit=1000)
        if w.workflow_id.startswith(f"{schedule_id}@")
    )


def times_of(ids: list[str]) -> list[datetime]:
    return [datetime.fromisoformat(i.split("@", 1)[1].replace("Z", "+00:00")) for i in ids]


def test_two_workers_start_exactly_one_workflow_for_each_time(sched_app: App) -> None:
    @sched_app.schedule("beat", every=1, args=["b"], overlap="allow")
    @sched_app.workflow
    async def beating(ctx: Any, label: str) -> str:
        return f"{label}@{ctx.info.workflow_id}"

    with WorkerThread(sched_app), WorkerThread(sched_app):
        ids = wait_until(
            lambda: len(found := started_ids(sched_app, "beat")) >= 5 and found,
            timeout=30,
            what="five times of the schedule",
        )
        first = sched_app.get_handle(ids[0]).result(timeout=10)
    times = times_of(ids)
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert steps == {1.0}, ids  # one workflow per second, none twice, none left out
    assert first == f"b@{ids[0]}"


def test_a_schedule_made_at_runtime_is_paused_resumed_triggered_and_deleted(
    sched_app: App,
) -> None:
    schedules = sched_app.schedules
    made = schedules.create("rt", "tick", every=3600, args=["r"])
    assert made.next_time is not None and not made.paused
    assert schedules.create("rt", "tick", every=3600, args=["r"]) == made  # idempotent
    with pytest.raises(DFError, match="exists with another spec"):
        schedules.create("rt", "tick", every=60)
    with WorkerThread(sched_app):
        paused = schedules.pause("rt", note="maintenance")
        assert paused.paused and paused.next_time is None and paused.note == "maintenance"
        handle = schedules.trigger("rt")  # by hand, paused or not
        assert handle.workflow_id.startswith("rt@") and handle.result(timeout=30).startswith("r@")
        assert schedules.get("rt").last_workflow_id == handle.workflow_id
        resumed = schedules.resume("rt")
        assert not resumed.paused and resumed.next_time is not None
        zoned = schedules.update("rt", cron="0 3 * * *", timezone="Europe/Berlin")
        assert zoned.spec.describe() == "cron '0 3 * * *' in Europe/Berlin"
        changed = schedules.update("rt", every=1)
        assert changed.spec.every_seconds == 1 and changed.spec.args == ("r",)
        wait_until(lambda: len(started_ids(sched_app, "rt")) >= 3, what="the updated interval")
    assert [s.schedule_id for s in schedules.list()] == ["rt"]
    schedules.delete("rt")
    assert schedules.list() == []
    with pytest.raises(DFError, match="there is no schedule 'rt'"):
        schedules.get("rt")


@pytest.mark.parametrize(("catch_up", "missed"), [("all", 3), ("last", 1), ("none", 0)])
def test_times_missed_while_no_worker_ran_follow_the_catch_up_policy(
    sched_app: App, monkeypatch: Any, catch_up: str, missed: int
) -> None:
    monkeypatch.setattr(_schedules, "LATE_AFTER_MS", 500)  # late after half a second
    made = sched_app.schedules.create(
        "down", "tick", every=1, args=["d"], overlap="allow", catch_up=catch_up
    )
    assert made.next_time is not None
    after = made.next_time.timestamp() + 3.6
    wait_until(lambda: time.time() > after, timeout=10, what="three times to pass")
    worker_started = datetime.now(UTC)
    with WorkerThread(sched_app):
        wait_until(
            lambda: any(t >= worker_started for t in times_of(started_ids(sched_app, "down"))),
            timeout=30,
            what="an on-time start",
        )
        late = [t for t in times_of(started_ids(sched_app, "down")) if t < worker_started]
    assert len(late) >= 3 if catch_up == "all" else len(late) == missed, late


def test_skip_starts_nothing_while_the_last_one_runs_and_buffer_one_starts_it_after(
    sched_app: App,
) -> None:
    schedules = sched_app.schedules
    schedules.create("skip", "slow", every=1, overlap="skip")
    schedules.create("buf", "slow", every=1, overlap="buffer_one")
    with WorkerThread(sched_app):
        [first_skip] = wait_until(lambda: started_ids(sched_app, "skip"), what="a start")
        [first_buf] = wait_until(lambda: started_ids(sched_app, "buf"), what="a start")
        wait_until(
            lambda: (
                schedules.get("buf").buffered_time is not None
                and "skipped" in schedules.get("skip").note
            ),
            what="a time skipped and a time buffered",
        )
        assert started_ids(sched_app, "skip") == [first_skip]
        assert started_ids(sched_app, "buf") == [first_buf]
        buffered = schedules.get("buf").buffered_time
        sched_app.get_handle(first_buf).signal("done", "ok")
        wait_until(lambda: len(started_ids(sched_app, "buf")) == 2, what="the buffered start")
        second = started_ids(sched_app, "buf")[1]
        assert times_of([second]) == [buffered]  # the time that waited, started once it ended
        for schedule_id in ("skip", "buf"):
            schedules.pause(schedule_id)
        for workflow_id in started_ids(sched_app, "skip") + started_ids(sched_app, "buf"):
            handle = sched_app.get_handle(workflow_id)
            if handle.status().status == "running":
                handle.cancel()


def test_a_schedule_survives_a_restart_of_the_server_and_the_workers(
    tmp_path: Path, namespace: str
) -> None:
    with EmbeddedServer(tmp_path / "js") as server:
        port = server.port
        app = App("restart", nats_url=server.url, namespace=namespace)

        @app.schedule("every-second", every=1, args=["x"], overlap="allow")
        @app.workflow
        async def tick(ctx: Any, label: str) -> str:
            return label

        with WorkerThread(app):
            wait_until(lambda: started_ids(app, "every-second"), what="a start")
        run_sync(app.aclose())
    with EmbeddedServer(tmp_path / "js", port=port) as server:
        before = len(started_ids(app, "every-second"))
        restarted = datetime.now(UTC)
        with WorkerThread(app):
            wait_until(
                lambda: any(t > restarted for t in times_of(started_ids(app, "every-second"))),
                timeout=30,
                what="a start after the restart",
            )
        assert len(started_ids(app, "every-second")) > before
        run_sync(app.aclose())


def test_the_schedule_commands_list_show_pause_resume_trigger_and_delete(
    sched_app: App, nats_url: str, namespace: str
) -> None:
    from tests.test_bad_input import df

    sched_app.schedules.create(
        "nightly", "order", cron="0 3 * * *", timezone="Europe/Berlin", args=["c", 5.0, 1]
    )

    def run(*args: str) -> str:
        return df("schedule", *args, nats_url=nats_url, namespace=namespace)

    listing = run("list")
    assert "nightly" in listing and "cron '0 3 * * *' in Europe/Berlin" in listing
    shown = run("show", "nightly")
    assert "workflow:  order('c', 5.0, 1) on default" in shown
    assert "policies:  overlap=skip catch_up=last" in shown
    assert "schedule nightly paused" in run("pause", "nightly", "--note", "moving servers")
    assert "(paused)" in run("show", "nightly") and "moving servers" in run("show", "nightly")
    assert "resumed; next 20" in run("resume", "nightly")
    started = run("trigger", "nightly").strip()
    assert started.startswith("started nightly@20")
    assert sched_app.get_handle(started.split()[-1]).status().workflow_type == "order"
    assert "schedule nightly deleted" in run("delete", "nightly")
    assert "(no schedules)" in run("list")


async def test_a_next_time_the_server_lost_is_armed_again_by_the_workers(
    sched_app: App, monkeypatch: Any
) -> None:
    import asyncio

    from dfcore.worker import _worker

    monkeypatch.setattr(_worker, "REARM_EVERY", 0.2)
    await sched_app.schedules.acreate("hourly", "tick", every=3600, args=["h"])
    store = await sched_app.client.store()
    state, _ = await store.schedules.get("hourly")
    assert state is not None and await store.schedules.armed(state)
    with WorkerThread(sched_app):
        await store.schedules._disarm("hourly")  # as if a crash or a race lost the arm
        assert not await store.schedules.armed(state)
        deadline = time.monotonic() + 20
        while not await store.schedules.armed(state):
            assert time.monotonic() < deadline, "the workers never armed it again"
            await asyncio.sleep(0.05)
