"""The Celery facade (``dfcore.contrib.celery``): Celery's task, calling and result API on
durable workflows, run by a real worker on a real server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import WorkflowNotFoundError
from dfcore.client._loopthread import run_sync
from dfcore.contrib.celery import (
    AsyncResult,
    Celery,
    NotSupportedError,
    TaskRevokedError,
    states,
)
from tests.workerkit import ROOT, WorkerThread, starts_of, wait_until


@pytest.fixture
def proj(nats_url: str, namespace: str, tmp_path: Path, monkeypatch: Any) -> Iterator[Any]:
    from tests.apps import celery_proj

    monkeypatch.setenv("DF_TEST_SIDE_EFFECTS", str(tmp_path / "effects"))
    restore = celery_proj.app.df_app._override(nats_url=nats_url, namespace=namespace)
    with WorkerThread(celery_proj.app.df_app):
        yield celery_proj
    run_sync(celery_proj.app.df_app.aclose())
    restore()


def test_delay_runs_the_task_on_a_worker_and_its_result_comes_back(proj: Any) -> None:
    result = proj.add.delay(2, 3)
    assert isinstance(result, AsyncResult) and result.get(timeout=30) == 5
    assert (result.state, result.ready(), result.successful()) == (states.SUCCESS, True, True)
    assert proj.add(2, 3) == 5  # called directly, it runs here, as in Celery
    same = AsyncResult(result.id, app=proj.app)
    assert same == result and same.result == 5


def test_a_task_id_makes_the_call_idempotent(proj: Any) -> None:
    first = proj.add.apply_async((1, 1), task_id="add-once")
    second = proj.add.apply_async((40, 2), task_id="add-once")  # the same call: starts nothing
    assert first.get(timeout=30) == second.get(timeout=30) == 2


def test_autoretry_retries_what_it_names_and_the_request_says_which_attempt(
    proj: Any, tmp_path: Path
) -> None:
    result = proj.flaky.apply_async(("k1",), task_id="flaky-1")
    assert result.get(timeout=30) == {"key": "k1", "retries": 2, "id": "flaky-1"}
    attempts = (tmp_path / "effects").read_text().splitlines()
    assert attempts == ["flaky k1 0", "flaky k1 1", "flaky k1 2"]


def test_self_retry_gives_up_after_max_retries_with_the_tasks_exception(proj: Any) -> None:
    assert proj.by_hand.delay(1).get(timeout=30) == 1  # one retry is allowed
    failed = proj.by_hand.delay(3)
    with pytest.raises(ValueError, match="not yet: 1"):
        failed.get(timeout=30)
    assert failed.state == states.FAILURE and failed.failed()


def test_an_exception_fails_the_task_at_once_and_get_raises_it(proj: Any) -> None:
    result = proj.fails.delay("cart")
    with pytest.raises(KeyError, match="no cart"):
        result.get(timeout=30)
    error = result.get(propagate=False)
    assert isinstance(error, KeyError) and result.state == states.FAILURE
    events = [e.type for e in proj.app.df_app.get_handle(result.id).history()]
    assert events.count("ActivityScheduled") == 1  # not retried: autoretry_for names nothing
    refused = proj.refused.delay()
    with pytest.raises(ConnectionRefusedError):
        refused.get(timeout=30)  # dont_autoretry_for wins over autoretry_for


def test_countdown_is_a_durable_timer_and_revoke_stops_a_waiting_task(proj: Any) -> None:
    later = proj.add.apply_async((1, 2), countdown=3600)
    wait_until(lambda: _timer_started(proj, later.id), what="the countdown's timer")
    assert later.state == states.PENDING and not later.ready()
    later.revoke()
    wait_until(lambda: later.state == states.REVOKED, what="the revoked state")
    with pytest.raises(TaskRevokedError):
        later.get(timeout=10)
    soon = proj.add.apply_async((1, 2), countdown=0.2)
    assert soon.get(timeout=30) == 3


def test_a_task_that_expires_before_it_runs_is_revoked(proj: Any) -> None:
    expired = proj.add.apply_async((1, 2), countdown=0.5, expires=0.1)
    with pytest.raises(TaskRevokedError, match="expired before it ran"):
        expired.get(timeout=30)
    assert expired.state == states.REVOKED


def _timer_started(proj: Any, task_id: str) -> bool:
    try:
        events = proj.app.df_app.get_handle(task_id).history()
    except WorkflowNotFoundError:  # not started yet
        return False
    return any(e.type == "TimerStarted" for e in events)


def test_what_the_facade_does_not_do_is_refused_naming_it(proj: Any) -> None:
    with pytest.raises(NotSupportedError, match="the apply_async option 'priority'"):
        proj.add.apply_async((1, 2), priority=5)
    with pytest.raises(TypeError, match=r"link= takes a signature, such as task\.s\(\)"):
        proj.add.apply_async((1, 2), link=proj.add.name)
    with pytest.raises(NotSupportedError, match="the task option 'rate_limit'"):
        proj.app.task(rate_limit="1/s")(lambda: None)
    with pytest.raises(NotSupportedError, match=r"remote control \(app\.control\)"):
        proj.app.control.inspect()


def test_config_from_object_takes_the_celery_settings_it_can() -> None:
    app = Celery("configured")
    app.config_from_object(
        {"CELERY_TASK_DEFAULT_QUEUE": "celery-q", "CELERY_BROKER_URL": "redis://x", "OTHER": 1},
        namespace="CELERY",
    )
    assert app.df_app.settings.task_queue == "celery-q"
    assert app.conf["broker_url"] == "redis://x" and "other" not in app.conf
    app.config_from_object({"broker_url": "nats://127.0.0.1:4999"})
    assert app.df_app.settings.nats_url == "nats://127.0.0.1:4999"


def test_the_core_worker_command_takes_the_celery_app(proj: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dfcore", "-A", "tests.apps.celery_proj:app", "workflow", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**_env(proj)},
    )
    assert done.returncode == 0, done.stderr


def _env(proj: Any) -> dict[str, str]:
    import os

    settings = proj.app.df_app.settings
    return {**os.environ, "DF_NATS_URL": settings.nats_url, "DF_NAMESPACE": settings.namespace}


def test_chain_group_and_chord_run_as_one_durable_workflow(proj: Any) -> None:
    from dfcore.contrib.celery import chain, chord, group

    piped = (proj.add.s(1, 2) | proj.add.s(10) | proj.add.si(100, 0)).apply_async()
    assert piped.get(timeout=30) == 100  # 1+2, then 3+10, then an immutable 100+0
    assert chain(proj.add.s(1, 1), proj.add.s(5)).delay().get(timeout=30) == 7
    assert group(proj.add.s(i, i) for i in range(4)).delay().get(timeout=30) == [0, 2, 4, 6]
    total = chord([proj.add.s(i, 1) for i in range(3)], proj.total.s())
    assert total.get(timeout=30) == 6  # the body once, with [1, 2, 3]
    handle = proj.app.df_app.get_handle(total.id)
    kinds = [e.type for e in handle.history()]
    assert kinds.count("ActivityScheduled") == 4  # three header tasks and the body, no polling
    assert chord([proj.add.s(1, 1)])(proj.total.s()).get(timeout=30) == 2
    with pytest.raises(KeyError, match="no chained"):
        (proj.add.s(1, 1) | proj.fails.si("chained")).delay().get(timeout=30)


def _children(proj: Any, task_id: str) -> list[str]:
    """The ids of the workflows a task's workflow started, from its history."""
    events = proj.app.df_app.get_handle(task_id).history()
    return [e.attributes["workflow_id"] for e in events if e.type == "ChildWorkflowScheduled"]


def test_links_start_after_the_task_with_its_result_each_once(proj: Any) -> None:
    from dfcore.contrib.celery import chain

    links = [proj.add.s(10), proj.add.si(7, 7), chain(proj.add.s(1), proj.add.s(100))]
    result = proj.add.apply_async((2, 3), link=links, task_id="linked")
    assert result.get(timeout=30) == 5
    assert _children(proj, "linked") == ["linked-link-0", "linked-link-1", "linked-link-2"]
    got = [proj.app.AsyncResult(f"linked-link-{n}").get(timeout=30) for n in range(3)]
    assert got == [15, 14, 106]  # the result first (not to an .si()), and into a chain
    assert [starts_of(proj.app.df_app, f"linked-link-{n}") for n in range(3)] == [1, 1, 1]
    again = proj.add.apply_async((2, 3), link=links, task_id="linked")  # the same call
    assert again.get(timeout=30) == 5 and len(_children(proj, "linked")) == 3
    one = proj.add.s(1, 1).apply_async(link=proj.add.s(1), link_error=proj.failed_id.s("x"))
    assert one.get(timeout=30) == 2 and _children(proj, one.id) == [f"{one.id}-link-0"]
    sig = proj.add.s(3, 4)
    sig.link(proj.add.s(1))
    two = sig.apply_async(link=proj.add.s(2))  # link() first, then link=
    assert two.get(timeout=30) == 7 and len(_children(proj, two.id)) == 2
    assert proj.app.AsyncResult(f"{two.id}-link-1").get(timeout=30) == 9


def test_the_task_is_ready_while_its_link_still_runs(proj: Any) -> None:
    proj.GATE.clear()
    try:
        result = proj.add.apply_async((20, 22), link=proj.gated.s(), task_id="before-link")
        assert result.get(timeout=30) == 42 and result.state == states.SUCCESS
        link = proj.app.AsyncResult("before-link-link-0")
        wait_until(lambda: link.state == states.STARTED, what="the link to run")
        assert not link.ready()
    finally:
        proj.GATE.set()
    assert link.get(timeout=30) == 42


def test_link_error_gets_the_request_exception_and_traceback_or_the_task_id(proj: Any) -> None:
    errbacks = [proj.on_failure.s(), proj.failed_id.s("noted")]
    result = proj.fails.apply_async(
        ("cart",), link=proj.add.s(1), link_error=errbacks, task_id="failing"
    )
    with pytest.raises(KeyError, match="no cart"):
        result.get(timeout=30)
    assert _children(proj, "failing") == ["failing-errback-0", "failing-errback-1"]
    assert proj.app.AsyncResult("failing-errback-0").get(timeout=30) == {
        "id": "failing",
        "task": proj.fails.name,
        "args": ["cart"],
        "error": ["KeyError", "'no cart'"],
        "traceback": "KeyError: 'no cart'",  # the traceback's last line: the task's exception
    }
    assert (result.traceback or "").endswith("KeyError: 'no cart'\n")
    assert proj.app.AsyncResult("failing-errback-1").get(timeout=30) == ["failing", "noted"]
    assert proj.app.AsyncResult("failing-link-0").state == states.PENDING  # never started


def test_what_links_cannot_be_is_refused_naming_it(proj: Any) -> None:
    from dfcore.contrib.celery import chain

    with pytest.raises(NotSupportedError, match="a chain, group or chord as link_error"):
        proj.add.apply_async((1, 1), link_error=chain(proj.add.s(1), proj.add.s(1)))
    with pytest.raises(TypeError, match="got <@task: "):
        proj.add.apply_async((1, 1), link=[proj.add])
    inner = proj.add.s(1, 1).on_error(proj.on_failure.s())
    with pytest.raises(NotSupportedError, match=r"link\(\) or link_error\(\) on .* inside a"):
        chain(inner, proj.add.s(1)).delay()


CRONTABS = [
    ({}, "* * * * *"),
    ({"minute": 0, "hour": 0}, "0 0 * * *"),
    ({"minute": "*/15"}, "0,15,30,45 * * * *"),
    ({"minute": 30, "hour": 7, "day_of_week": 1}, "30 7 * * 1"),
    ({"minute": 0, "hour": "*/3,8-17"}, "0 0,3,6,8-18,21 * * *"),
    ({"minute": 0, "hour": 0, "day_of_week": "sunday"}, "0 0 * * 0"),
    ({"minute": "*", "hour": "3,17", "day_of_week": "thu,fri"}, "* 3,17 * * 4,5"),
    (
        {"minute": 0, "hour": "*/2,12-17/2", "day_of_week": "mon-fri"},
        "0 0,2,4,6,8,10,12,14,16,18,20,22 * * 1-5",
    ),
    ({"minute": 0, "hour": 0, "day_of_week": "fri-mon"}, "0 0 * * 0,1,5,6"),
    (
        {"minute": 0, "hour": 0, "day_of_month": "2-30/2"},
        "0 0 2,4,6,8,10,12,14,16,18,20,22,24,26,28,30 * *",
    ),
    ({"minute": 0, "hour": 0, "day_of_month": "1-7,15-21"}, "0 0 1-7,15-21 * *"),
    ({"minute": 0, "hour": 0, "day_of_month": 11, "month_of_year": "may"}, "0 0 11 5 *"),
    ({"minute": 0, "hour": 0, "month_of_year": "*/3"}, "0 0 * 1,4,7,10 *"),
    ({"minute": [0, 30], "hour": range(9, 12)}, "0,30 9-11 * * *"),
]


@pytest.mark.parametrize(("fields", "cron"), CRONTABS)
def test_a_crontab_is_the_cron_expression_celery_means(fields: dict[str, Any], cron: str) -> None:
    from dfcore.contrib.celery.schedules import crontab

    ours = crontab(**fields)
    assert ours.cron == cron
    try:
        import celery.schedules  # Celery's own, where it is installed: the same times
    except ImportError:
        return
    theirs = celery.schedules.crontab(**fields)
    for name in ("minute", "hour", "day_of_week", "day_of_month", "month_of_year"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_a_crontab_celery_would_refuse_or_cron_cannot_say_is_refused() -> None:
    from dfcore.contrib.celery.schedules import crontab, solar

    with pytest.raises(ValueError, match=r"crontab minute=60: 60 is out of range 0-59"):
        crontab(minute=60)
    with pytest.raises(ValueError, match=r"crontab day_of_week='funday': 'funday' is not"):
        crontab(day_of_week="funday")
    with pytest.raises(NotSupportedError, match="restricts both day_of_week and day_of_month"):
        crontab(day_of_week=1, day_of_month="1-7")
    with pytest.raises(NotSupportedError, match=r"the solar schedule \(celery\.schedules\.solar"):
        solar("sunset", -37.81, 144.96)
    assert crontab.from_string("30 7 * * mon-fri") == crontab(30, 7, day_of_week="1-5")


@pytest.fixture
def new_app() -> Iterator[Any]:
    """A Celery app made for one test (it stops being the current app afterwards)."""
    from dfcore.contrib.celery import _app

    made = Celery("beat-test")
    yield made
    _app._apps.remove(made)
    run_sync(made.df_app.aclose())


def _declared(app: Any) -> dict[str, str]:
    return {spec.schedule_id: spec.describe() for spec in app.df_app.registry.schedules}


def test_beat_schedule_entries_become_schedules_of_the_app(new_app: Any, caplog: Any) -> None:
    from datetime import timedelta

    from dfcore.contrib.celery.schedules import crontab, schedule

    new_app.config_from_object(
        {
            "CELERY_TIMEZONE": "Europe/Berlin",
            "CELERY_BEAT_SCHEDULE": {
                "add-every-30-seconds": {"task": "t.add", "schedule": 30.0, "args": (16, 16)},
                "Report on Mondays at 7:30": {
                    "task": "t.report",
                    "schedule": crontab(hour=7, minute=30, day_of_week=1),
                    "kwargs": {"kind": "weekly"},
                    "options": {"queue": "reports"},
                },
            },
        },
        namespace="CELERY",
    )
    new_app.conf.beat_schedule["hourly"] = {"task": "t.add", "schedule": timedelta(hours=1)}
    assert new_app.conf.timezone == "Europe/Berlin"
    report_id = "Report-on-Mondays-at-7-30-" + _sha("Report on Mondays at 7:30")
    assert _declared(new_app) == {  # declared when the app is finalized (a worker reads it)
        "add-every-30-seconds": "every 30s",
        report_id: "cron '30 7 * * 1' in Europe/Berlin",
        "hourly": "every 3600s",
    }
    [report] = [s for s in new_app.df_app.registry.schedules if s.schedule_id == report_id]
    assert report.workflow == "celery.task" and report.task_queue == "reports"
    assert list(report.args) == ["t.report", [], {"kind": "weekly"}, 0.0, None]
    assert report.overlap == "allow"  # as Celery beat: a time runs even while the last one does
    assert "runs 't.report', which is not a task of this app" in caplog.text
    new_app.conf.beat_schedule = {"only": {"task": "t.add", "schedule": schedule(5)}}
    assert _declared(new_app) == {"only": "every 5s"}  # in place of the ones before
    new_app.conf.update(timezone="UTC")
    assert new_app.conf["timezone"] == "UTC" and "result_backend" not in new_app.conf


def _sha(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:8]


def test_schedule_ids_are_the_entry_names_or_made_valid_from_them() -> None:
    from dfcore import ScheduleSpec
    from dfcore.contrib.celery._beat import schedule_id

    assert schedule_id("add-every-30-seconds") == "add-every-30-seconds"
    made = [schedule_id(name) for name in ("a b", "a  b", "a/b", "x" * 80, "!!!", "add(2, 2)")]
    assert made[:2] == [f"a-b-{_sha('a b')}", f"a-b-{_sha('a  b')}"]  # never the same id
    assert made[4] == f"beat-{_sha('!!!')}" and made[5] == f"add-2-2-{_sha('add(2, 2)')}"
    for sid in made:
        ScheduleSpec(sid, "w", every=60)  # each one a valid id


def test_add_periodic_task_from_on_after_configure(new_app: Any) -> None:
    from dfcore.contrib.celery.schedules import crontab

    @new_app.on_after_configure.connect
    def setup_periodic_tasks(sender: Any, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, ping.s("hello"), name="ping every 10")
        sender.add_periodic_task(crontab(minute=0), ping.s("hourly"))

    @new_app.task(name="t.ping")
    def ping(word: str) -> str:
        return word

    assert _declared(new_app) == {
        f"ping-every-10-{_sha('ping every 10')}": "every 10s",
        f"t-ping-hourly-{_sha(repr(ping.s('hourly')))}": "cron '0 * * * *' in UTC",
    }
    assert "ping every 10" in new_app.conf.beat_schedule


def test_a_beat_entry_the_facade_cannot_carry_out_is_refused_where_it_is_written(
    new_app: Any,
) -> None:
    from dfcore import ConfigurationError

    with pytest.raises(NotSupportedError, match="the beat_schedule option 'expires'"):
        new_app.conf.beat_schedule = {
            "x": {"task": "t.add", "schedule": 5, "options": {"expires": 10}}
        }
    with pytest.raises(ConfigurationError, match="entry 'y' has no 'task'"):
        new_app.conf.beat_schedule = {"y": {"schedule": 5}}
    with pytest.raises(ConfigurationError, match="'schedule' must be a crontab"):
        new_app.conf.beat_schedule = {"z": {"task": "t.add", "schedule": "5"}}
    with pytest.raises(ConfigurationError, match="every must be from 1 second"):
        new_app.conf.beat_schedule = {"w": {"task": "t.add", "schedule": 0.5}}
    assert _declared(new_app) == {}  # none of them was kept


def test_a_beat_entry_runs_its_task_on_the_workers(
    new_app: Any, nats_url: str, namespace: str
) -> None:
    from dfcore import DFError

    @new_app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    new_app.conf.beat_schedule = {
        "add-every-second": {"task": "t.add", "schedule": 1.0, "args": (16, 16)}
    }
    new_app.df_app.configure(nats_url=nats_url, namespace=namespace)

    def started() -> str | None:
        try:
            return new_app.df_app.schedules.get("add-every-second").last_workflow_id
        except DFError:  # not created yet
            return None

    with WorkerThread(new_app.df_app):
        first = wait_until(started, what="the beat entry to start its task")
        assert first.startswith("add-every-second@")
        assert new_app.AsyncResult(first).get(timeout=30) == 32


def test_include_and_autodiscover_import_when_the_app_is_finalized(monkeypatch: Any) -> None:
    monkeypatch.delitem(sys.modules, "tests.apps.celery_included", raising=False)
    app = Celery("included", include=["tests.apps.celery_included"], broker="nats://h:4998")
    try:
        app.autodiscover_tasks(["tests.apps"], related_name="celery_included")
        app.autodiscover_tasks(["tests"])  # tests.tasks does not exist: passed over
        assert "tests.apps.celery_included" not in sys.modules  # not yet, as in Celery
        assert app.df_app.settings.nats_url == "nats://h:4998"  # reading df_app finalizes
        assert "tests.apps.celery_included" in sys.modules
    finally:
        from dfcore.contrib.celery import _app

        _app._apps.remove(app)


def test_delay_on_commit_without_django_says_what_to_install(proj: Any, monkeypatch: Any) -> None:
    from dfcore.contrib.celery import CeleryError

    monkeypatch.setitem(sys.modules, "dfcore.integrations.django", None)
    with pytest.raises(CeleryError, match=r"pip install 'durablefuture\[django\]'"):
        proj.add.delay_on_commit(1, 2)
