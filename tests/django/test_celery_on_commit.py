"""The Celery facade's ``delay_on_commit`` and ``apply_async_on_commit``: a task call that
goes through the transactional outbox, sent if and only if the transaction commits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from dfcore.contrib.celery import AsyncResult, NotSupportedError, states
from dfcore.integrations.django import make_relay
from dfcore.integrations.django.models import OutboxEntry
from dfcore.outbox import flush_committed
from tests.workerkit import WorkerThread, on_test_server, starts_of

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, as a view makes them


@pytest.fixture
def proj(nats_url: str, namespace: str, tmp_path: Path, monkeypatch: Any) -> Iterator[Any]:
    """The Celery test project on this test's server, with a worker."""
    from tests.apps import celery_proj

    monkeypatch.setenv("DF_TEST_SIDE_EFFECTS", str(tmp_path / "effects"))
    df_app = celery_proj.app.df_app
    with on_test_server(df_app, nats_url, namespace), WorkerThread(df_app):
        yield celery_proj


def test_delay_on_commit_sends_the_call_when_the_transaction_commits(proj: Any) -> None:
    with transaction.atomic():
        result = proj.add.delay_on_commit(2, 3)
        assert isinstance(result, AsyncResult)  # its id is known at once
        entry = OutboxEntry.objects.get()
        assert (entry.workflow_id, entry.workflow_type) == (result.id, "celery.task")
        assert entry.status == "pending" and result.state == states.PENDING
    assert result.get(timeout=30) == 5
    assert flush_committed()  # the publishing thread has recorded it
    assert OutboxEntry.objects.get().status == "published"
    assert starts_of(proj.app.df_app, result.id) == 1


def test_apply_async_on_commit_takes_the_apply_async_options(proj: Any) -> None:
    with transaction.atomic():
        result = proj.add.apply_async_on_commit(
            (20, 1), task_id="on-commit-1", countdown=0.1, link=proj.add.s(100)
        )
    assert result.id == "on-commit-1" and result.get(timeout=30) == 21
    assert proj.app.AsyncResult("on-commit-1-link-0").get(timeout=30) == 121


def test_a_rollback_sends_nothing(proj: Any) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        result = proj.add.delay_on_commit(1, 1)
        raise Abort
    assert not OutboxEntry.objects.exists()
    assert make_relay(["default"]).relay_once() == 0
    assert result.state == states.PENDING  # never sent: no such task


def test_an_option_the_facade_does_not_have_fails_inside_the_transaction(proj: Any) -> None:
    refused = pytest.raises(NotSupportedError, match="the apply_async option 'priority'")
    with refused, transaction.atomic():
        proj.add.apply_async_on_commit((1, 1), priority=3)
    assert not OutboxEntry.objects.exists()
