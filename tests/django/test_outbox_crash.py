"""Crashes around the outbox, with real processes killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfcore import App, EmbeddedServer
from dfcore.integrations.django.models import OutboxEntry, RelayLease
from tests.django.conftest import django_process, manage_py, on_all_databases
from tests.workerkit import WorkerThread, sigkill, starts_of, wait_until

pytestmark = [on_all_databases, pytest.mark.slow]


def on_server(
    *args: str, nats_url: str, namespace: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A test-settings process using this server and namespace (see ``django_process``)."""
    output: Path | int = log if log is not None else subprocess.PIPE
    return django_process(*args, output=output, DF_NATS_URL=nats_url, DF_NAMESPACE=namespace)


def test_a_crash_between_commit_and_publish_loses_nothing(
    db_alias: str, nats_url: str, namespace: str, project_app: App
) -> None:
    web = on_server(
        "-m",
        "tests.django.outbox_crash",
        db_alias,
        "greet-crash",
        nats_url=nats_url,
        namespace=namespace,
    )
    assert web.stdout is not None
    assert web.stdout.readline().strip() == b"committed"
    sigkill(web)  # after the commit, before the post-commit publish
    web.stdout.close()
    assert OutboxEntry.objects.using(db_alias).get().status == "pending"

    relay = on_server(
        *manage_py("df_relay", "--once", "--database", db_alias),
        nats_url=nats_url,
        namespace=namespace,
    )
    out, _ = relay.communicate(timeout=60)
    assert relay.returncode == 0, out
    assert b"published 1 workflow start" in out
    with WorkerThread(project_app):
        assert project_app.get_handle("greet-crash").result(timeout=30) == "hello crash"
    assert starts_of(project_app, "greet-crash") == 1


@pytest.fixture
def paused_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of this test's own, so that pausing it (SIGSTOP) harms no other test."""
    server = EmbeddedServer(tmp_path / "nats", log_file=str(tmp_path / "nats.log"))
    server.start()
    yield server
    os.kill(server.pid, signal.SIGCONT)  # type: ignore[arg-type]
    server.stop()


def test_a_relay_killed_mid_publish_is_finished_by_another(
    db_alias: str, tmp_path: Path, namespace: str, settings, paused_server: EmbeddedServer
) -> None:
    from django.db import transaction

    from dfcore.integrations.django import get_app, start_on_commit
    from tests.djangoapp.workflows import greeting

    url = paused_server.url
    settings.DFCORE = {"NATS_URL": url, "NAMESPACE": namespace, "PUBLISH_ON_COMMIT": False}
    app = get_app()
    log = tmp_path / "relay.log"
    relay = on_server(
        *manage_py("df_relay", "--database", db_alias, "-l", "DEBUG"),
        nats_url=url,
        namespace=namespace,
        log=log,
    )
    try:
        with transaction.atomic(using=db_alias):
            start_on_commit(greeting, "one", workflow_id="greet-one", using=db_alias)
        wait_until(
            lambda: OutboxEntry.objects.using(db_alias).get(workflow_id="greet-one").published_at,
            what="the relay to publish the first row (and so hold a connection)",
        )
        os.kill(paused_server.pid, signal.SIGSTOP)  # type: ignore[arg-type]  # no more replies
        with transaction.atomic(using=db_alias):
            start_on_commit(greeting, "two", workflow_id="greet-two", using=db_alias)
        wait_until(
            lambda: log.read_text().count("publishing 1 workflow start") >= 2,
            what="the relay to claim the second row",
        )
        sigkill(relay)  # mid-publish
    finally:
        if relay.poll() is None:
            sigkill(relay)
    os.kill(paused_server.pid, signal.SIGCONT)  # type: ignore[arg-type]
    assert OutboxEntry.objects.using(db_alias).get(workflow_id="greet-two").published_at is None
    # SQLite relays take turns by lease; the dead relay's lease would expire after its TTL.
    RelayLease.objects.using(db_alias).all().delete()

    second = on_server(
        *manage_py("df_relay", "--once", "--database", db_alias), nats_url=url, namespace=namespace
    )
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert OutboxEntry.objects.using(db_alias).get(workflow_id="greet-two").published_at
    with WorkerThread(app):
        assert app.get_handle("greet-two").result(timeout=30) == "hello two"
    assert starts_of(app, "greet-two") == 1
