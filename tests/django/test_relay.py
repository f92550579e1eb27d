"""Relays side by side: SKIP LOCKED on PostgreSQL, a lease on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from django.db import connections, transaction

from dfcore import App
from dfcore.integrations.django import make_relay, start_on_commit
from dfcore.integrations.django.models import OutboxEntry
from dfcore.integrations.django.outbox import DjangoOutboxSource
from dfcore.outbox import OutboxRelay
from tests.django.conftest import on_all_databases
from tests.djangoapp.workflows import greeting
from tests.workerkit import starts_of

pytestmark = on_all_databases


class CountingSource(DjangoOutboxSource):
    """Records which rows this relay marked published."""

    def __init__(self, using: str) -> None:
        super().__init__(using)
        self.published: list[Any] = []

    def mark_published(self, keys: Sequence[Any]) -> None:
        super().mark_published(keys)
        self.published.extend(keys)


def fill_outbox(alias: str, count: int) -> None:
    with transaction.atomic(using=alias):
        for n in range(count):
            start_on_commit(greeting, f"r{n}", workflow_id=f"relay-{n}", using=alias)


def test_two_relays_on_postgres_never_publish_a_row_twice(
    dfcore_settings: dict, settings: Any, project_app: App
) -> None:
    if "pg" not in connections:
        pytest.skip("PostgreSQL is not configured")
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}
    fill_outbox("pg", 300)
    sources = [CountingSource("pg"), CountingSource("pg")]
    relays = [OutboxRelay(project_app, [s], batch_size=10, min_age=0) for s in sources]
    start = threading.Barrier(2)

    def run(relay: OutboxRelay) -> None:
        start.wait()
        try:
            relay.relay_once()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    first, second = (set(source.published) for source in sources)
    assert first and second, "both relays should have taken a share"
    assert not first & second
    assert len(first | second) == 300
    assert not OutboxEntry.objects.using("pg").filter(published_at__isnull=True).exists()
    assert all(starts_of(project_app, f"relay-{n}") == 1 for n in range(0, 300, 7))


def test_sqlite_relays_take_turns(dfcore_settings: dict, settings: Any) -> None:
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}
    source = DjangoOutboxSource("default")
    assert not source.concurrent  # SQLite has no SKIP LOCKED
    first, second = make_relay(["default"]), make_relay(["default"])
    fill_outbox("default", 3)
    assert first.relay_once() == 3  # takes the lease
    with transaction.atomic():
        for n in range(2):
            start_on_commit(greeting, "x", workflow_id=f"later-{n}")
    assert second.relay_once() == 0  # the first relay's turn has not expired
    assert first.relay_once() == 2
