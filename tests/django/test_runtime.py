"""What the integration does around the engine: ORM connections, one NATS connection."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from dfcore import App
from tests.djangoapp.activities import three_activities_on_one_thread
from tests.djangoapp.workflows import greeting
from tests.workerkit import WorkerThread


@pytest.mark.django_db(transaction=True)
def test_activities_get_fresh_database_connections(project_app: App) -> None:
    # One activity thread, so each run reuses the thread (and its connection) of the last.
    with WorkerThread(project_app, activity_concurrency=1):
        handle = three_activities_on_one_thread.start()
        assert handle.result(timeout=30) == [True, True, True]


def test_async_views_under_wsgi_do_not_connect_per_request(
    project_app: App, nats_connects: list[Any]
) -> None:
    """Django runs an async view under WSGI with asgiref's async_to_sync: a loop per call."""

    async def view(n: int) -> str:
        return (await greeting.astart(f"v{n}", workflow_id=f"view-{n}")).workflow_id

    ids = [async_to_sync(view)(n) for n in range(10)]
    assert ids == [f"view-{n}" for n in range(10)]
    # The first loop's own connection (closed with its loop), then the shared one.
    assert len(nats_connects) <= 2
