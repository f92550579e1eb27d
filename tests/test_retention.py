"""History retention: the server removes a finished workflow's records once its retention has
passed, with no process running for it; running workflows are never touched."""

from __future__ import annotations

from typing import Any

import nats
import pytest

from dfcore import App, WorkflowNotFoundError
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._naming import Layout

from .workerkit import WorkerThread, wait_until

DAY = 24 * 3600.0


def build(nats_url: str, namespace: str, retention: float) -> App:
    app = App("retention", nats_url=nats_url, namespace=namespace, history_retention=retention)

    @app.activity
    def note(text: str) -> str:
        return text

    @app.workflow
    async def quick(ctx: Any, text: str) -> str:
        return str(await ctx.activity(note, text))

    @app.workflow
    async def year_long(ctx: Any) -> str:
        await ctx.sleep(365 * DAY)
        return "a year later"

    return app


def gone(app: App, workflow_id: str) -> bool:
    try:
        return app.get_handle(workflow_id).history() == []
    except WorkflowNotFoundError:
        return True


async def status_headers(nats_url: str, namespace: str, workflow_id: str) -> dict[str, str]:
    lay = Layout(namespace)
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg(
            lay.history_stream, lay.status_subject("default", workflow_id)
        )
        return dict(msg.headers or {})
    finally:
        await nc.close()


def test_a_finished_workflow_is_removed_after_its_retention_and_a_running_one_is_not(
    nats_url: str, namespace: str
) -> None:
    app = build(nats_url, namespace, retention=2.0)
    with WorkerThread(app):
        running = app.start("year_long", workflow_id="for-a-year")
        wait_until(lambda: len(running.history()) >= 2, what="the year-long sleep recorded")
        before = running.history()
        assert app.start("quick", "hi", workflow_id="done-soon").result(timeout=30) == "hi"
        headers = run_sync(status_headers(nats_url, namespace, "done-soon"))
        assert headers["Nats-Schedule"].startswith("@at ")
        assert headers["Nats-Schedule-Target"].endswith(".done-soon")
        wait_until(lambda: gone(app, "done-soon"), timeout=60, what="the finished one removed")
        assert running.history() == before  # untouched, its timer still pending
        assert running.status().status == "running"
        assert app.dead_letters() == []  # the removal's marker is no bad message
    run_sync(app.aclose())


def test_retention_zero_keeps_histories_for_ever(nats_url: str, namespace: str) -> None:
    app = build(nats_url, namespace, retention=0)
    with WorkerThread(app):
        assert app.start("quick", "kept", workflow_id="kept").result(timeout=30) == "kept"
    headers = run_sync(status_headers(nats_url, namespace, "kept"))
    assert "Nats-Schedule" not in headers
    run_sync(app.aclose())


def test_a_bad_retention_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from dfcore import ConfigurationError

    monkeypatch.setenv("DF_HISTORY_RETENTION", "a week")
    with pytest.raises(ConfigurationError, match="DF_HISTORY_RETENTION is invalid"):
        App("bad").settings  # noqa: B018


@pytest.fixture
def server_2_12(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections report nats-server 2.12.8: schedules, but no rollup from a schedule (a real
    2.12.8 accepts the header and ignores it, which is why it is refused by version)."""
    from nats.aio.client import Client, ServerVersion

    old = property(lambda nc: ServerVersion("2.12.8"))
    monkeypatch.setattr(Client, "connected_server_version", old)


def test_an_explicit_retention_on_a_server_too_old_for_it_is_refused(
    nats_url: str, namespace: str, server_2_12: None
) -> None:
    from dfcore import ConfigurationError

    app = build(nats_url, namespace, retention=60.0)
    with pytest.raises(ConfigurationError, match=r"needs nats-server 2\.14 or newer.*2\.12\.8"):
        app.start("quick", "x")
    run_sync(app.aclose())


def test_the_default_retention_on_an_older_server_keeps_histories_and_warns(
    nats_url: str, namespace: str, server_2_12: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("default-retention", nats_url=nats_url, namespace=namespace)

    @app.workflow
    async def nothing(ctx: Any) -> int:
        return 1

    with WorkerThread(app):
        assert app.start("nothing", workflow_id="old-server").result(timeout=30) == 1
    assert "Nats-Schedule" not in run_sync(status_headers(nats_url, namespace, "old-server"))
    assert "finished workflows are kept until it is upgraded" in caplog.text
    run_sync(app.aclose())
