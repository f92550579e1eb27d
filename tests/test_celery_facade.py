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
from tests.workerkit import ROOT, WorkerThread, wait_until


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
    with pytest.raises(NotSupportedError, match="the apply_async option 'link'"):
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
