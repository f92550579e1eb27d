"""The transactional outbox: a start commits with its transaction, exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction

from dfcore import App, SerializationError
from dfcore.integrations.django import make_relay, start_on_commit
from dfcore.integrations.django.models import OutboxEntry
from dfcore.outbox import flush_committed
from tests.django.conftest import on_all_databases
from tests.djangoapp.workflows import greeting
from tests.workerkit import WorkerThread, starts_of, wait_until

pytestmark = on_all_databases


def test_commit_starts_the_workflow_once(
    db_alias: str, worker: WorkerThread, project_app: App
) -> None:
    with transaction.atomic(using=db_alias):
        handle = start_on_commit(greeting, "ada", workflow_id="greet-ada", using=db_alias)
        assert handle.workflow_id == "greet-ada"  # known before the commit
        assert OutboxEntry.objects.using(db_alias).get().status == "pending"
    assert handle.result(timeout=30) == "hello ada"
    assert flush_committed()  # the publishing thread has recorded it
    entry = OutboxEntry.objects.using(db_alias).get()
    assert entry.status == "published" and entry.attempts == 1
    assert starts_of(project_app, "greet-ada") == 1


def test_rollback_starts_nothing(db_alias: str, project_app: App) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic(using=db_alias):
        start_on_commit(greeting, "bob", workflow_id="greet-bob", using=db_alias)
        raise Abort
    assert not OutboxEntry.objects.using(db_alias).exists()
    assert make_relay([db_alias]).relay_once() == 0
    with pytest.raises(Exception, match="greet-bob"):
        project_app.get_handle("greet-bob").status()


def test_a_bad_argument_fails_inside_the_transaction(db_alias: str) -> None:
    with pytest.raises(SerializationError, match="argument 1"), transaction.atomic(using=db_alias):
        start_on_commit(greeting, object(), using=db_alias)
    assert not OutboxEntry.objects.using(db_alias).exists()


def test_the_relay_publishes_what_the_fast_path_left(
    db_alias: str, dfcore_settings: dict, settings, project_app: App
) -> None:
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}
    with transaction.atomic(using=db_alias):
        start_on_commit(greeting, "cy", workflow_id="greet-cy", using=db_alias)
    assert OutboxEntry.objects.using(db_alias).get().status == "pending"
    assert make_relay([db_alias]).relay_once() == 1
    assert OutboxEntry.objects.using(db_alias).get().status == "published"
    with WorkerThread(project_app):
        assert project_app.get_handle("greet-cy").result(timeout=30) == "hello cy"


def test_publishing_twice_starts_once(
    db_alias: str, worker: WorkerThread, project_app: App
) -> None:
    with transaction.atomic(using=db_alias):
        handle = start_on_commit(greeting, "di", workflow_id="greet-di", using=db_alias)
    wait_until(lambda: OutboxEntry.objects.using(db_alias).get().published_at, what="publish")
    entry = OutboxEntry.objects.using(db_alias).get()
    assert entry.created_at.utcoffset() == entry.published_at.utcoffset() == timedelta(0)
    # A relay that died after publishing but before recording it publishes again.
    OutboxEntry.objects.using(db_alias).update(published_at=None)
    assert make_relay([db_alias]).relay_once() == 1
    assert handle.result(timeout=30) == "hello di"
    assert starts_of(project_app, "greet-di") == 1
