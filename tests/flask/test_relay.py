"""Relays: after a crash between commit and publish, and side by side (SKIP LOCKED, lease)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from dfcore.integrations.flask.outbox import SQLAlchemyOutboxSource, outbox_table
from dfcore.outbox import OutboxRelay
from tests.flask.conftest import Factory, flask_process
from tests.flaskapp import db, df, greet
from tests.workerkit import WorkerThread, popen, sigkill, starts_of


class CountingSource(SQLAlchemyOutboxSource):
    """Records which rows this relay marked published."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.published: list[Any] = []

    def mark_published(self, keys: Sequence[Any]) -> None:
        super().mark_published(keys)
        self.published.extend(keys)


def fill_outbox(app: Flask, count: int) -> None:
    with app.app_context():
        for n in range(count):
            df.start_in_transaction(db.session, greet, f"r{n}", workflow_id=f"relay-{n}")
        db.session.commit()


def unpublished(app: Flask) -> list[Any]:
    with app.app_context():
        query = select(outbox_table.c.workflow_id).where(outbox_table.c.published_at.is_(None))
        return list(db.session.scalars(query))


@pytest.mark.slow
def test_a_crash_between_commit_and_publish_loses_nothing(
    make_flask_app: Factory, database_uri: str, flask_config: dict[str, Any]
) -> None:
    web = make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri)
    env = {key: str(value) for key, value in flask_config.items()}
    env["FLASKAPP_DATABASE_URI"] = database_uri
    crashing = popen(
        [sys.executable, "-m", "tests.flask.outbox_crash", "greet-crash"], {**os.environ, **env}
    )
    assert crashing.stdout is not None
    assert crashing.stdout.readline().strip() == b"committed"
    sigkill(crashing)  # after the commit, before the post-commit publish
    crashing.stdout.close()
    assert unpublished(web) == ["greet-crash"]

    relay = flask_process("df", "relay", "--once", env=env)
    out, _ = relay.communicate(timeout=60)
    assert relay.returncode == 0, out
    assert b"published 1 workflow start(s)" in out
    assert unpublished(web) == []
    dfapp = df.get_app(web)
    with WorkerThread(dfapp), web.app_context():
        assert greet.get_handle("greet-crash").result(timeout=30).startswith("hello crash")
    assert starts_of(dfapp, "greet-crash") == 1


@pytest.mark.parametrize("database_uri", ["postgresql"], indirect=True)
def test_two_relays_on_postgres_never_publish_a_row_twice(
    make_flask_app: Factory, database_uri: str
) -> None:
    web = make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri, DF_PUBLISH_ON_COMMIT=False)
    fill_outbox(web, 300)
    with web.app_context():
        sources = [CountingSource(db.engine), CountingSource(db.engine)]
    dfapp = df.get_app(web)
    relays = [OutboxRelay(dfapp, [source], batch_size=10, min_age=0) for source in sources]
    start = threading.Barrier(2)

    def run(relay: OutboxRelay) -> None:
        start.wait()
        relay.relay_once()

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    first, second = (set(source.published) for source in sources)
    assert first and second, "both relays should have taken a share"
    assert not first & second
    assert len(first | second) == 300
    assert unpublished(web) == []
    assert all(starts_of(dfapp, f"relay-{n}") == 1 for n in range(0, 300, 7))


def test_sqlite_relays_take_turns(make_flask_app: Factory) -> None:
    web = make_flask_app(DF_PUBLISH_ON_COMMIT=False)
    with web.app_context():
        assert not SQLAlchemyOutboxSource(db.engine).concurrent  # SQLite has no SKIP LOCKED
        first, second = df.get_state().make_relay(), df.get_state().make_relay()
    fill_outbox(web, 3)
    assert first.relay_once() == 3  # takes the lease
    with web.app_context():
        df.start_in_transaction(db.session, greet, "r3", workflow_id="relay-3")
        db.session.commit()
    assert second.relay_once() == 0  # the first relay holds the turn
    assert first.relay_once() == 1
