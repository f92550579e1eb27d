"""The SQLAlchemy outbox: a workflow starts if and only if the transaction commits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from dfcore import App, ConfigurationError, SerializationError, WorkflowNotFoundError
from dfcore.integrations.flask.outbox import (
    SQLAlchemyOutboxSource,
    create_outbox_tables,
    make_relay,
    outbox_table,
    start_in_transaction,
)
from dfcore.outbox import flush_committed
from tests.flask.conftest import Factory
from tests.flaskapp import Greeting, db, df, greet
from tests.test_observe import Carrier, first_history_message
from tests.workerkit import WorkerThread, starts_of


def outbox_rows(app: Flask) -> list[Any]:
    with app.app_context():
        return list(db.session.execute(select(outbox_table).order_by(outbox_table.c.id)))


@pytest.fixture
def web(make_flask_app: Factory, database_uri: str) -> Flask:
    """The test app on this test's database (SQLite, then PostgreSQL)."""
    return make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri)


def test_commit_starts_the_workflow_once(web: Flask) -> None:
    dfapp = df.get_app(web)
    with WorkerThread(dfapp):
        reply = web.test_client().post("/greet/ada")
        assert reply.json == {"workflow_id": "greet-ada"}
        assert flush_committed()  # the thread that publishes after commits is done
        with web.app_context():
            assert greet.get_handle("greet-ada").result(timeout=30).startswith("hello ada")
    [row] = outbox_rows(web)
    assert row.published_at is not None  # published right after the commit, not by a relay
    assert row.created_at.utcoffset() == row.published_at.utcoffset() == timedelta(0)  # aware UTC
    assert row.created_at <= row.published_at <= datetime.now(UTC)
    assert row.attempts == 1
    assert starts_of(dfapp, "greet-ada") == 1


def test_rollback_starts_nothing(web: Flask) -> None:
    with web.app_context():
        db.session.add(Greeting(name="eve"))
        handle = df.start_in_transaction(db.session, greet, "eve", workflow_id="greet-eve")
        assert handle.workflow_id == "greet-eve"  # known before the commit
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Greeting)) == 0
        with pytest.raises(WorkflowNotFoundError):
            handle.status()
    assert outbox_rows(web) == []


def test_a_rolled_back_savepoint_starts_nothing(web: Flask) -> None:
    with web.app_context():
        savepoint = db.session.begin_nested()
        df.start_in_transaction(db.session, greet, "sam", workflow_id="greet-sam")
        savepoint.rollback()
        df.start_in_transaction(db.session, greet, "tom", workflow_id="greet-tom")
        db.session.commit()
        with pytest.raises(WorkflowNotFoundError):
            greet.get_handle("greet-sam").status()
        assert greet.get_handle("greet-tom").status().status == "running"
    assert [row.workflow_id for row in outbox_rows(web)] == ["greet-tom"]


def test_a_bad_argument_fails_before_the_commit(web: Flask) -> None:
    with web.app_context():
        db.session.add(Greeting(name="bad"))
        with pytest.raises(SerializationError):
            df.start_in_transaction(db.session, greet, object(), workflow_id="greet-bad")
        db.session.rollback()
    assert outbox_rows(web) == []


def test_the_relay_publishes_what_the_commit_did_not(
    make_flask_app: Factory, database_uri: str
) -> None:
    web = make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri, DF_PUBLISH_ON_COMMIT=False)
    assert web.test_client().post("/greet/lee").status_code == 200
    [row] = outbox_rows(web)
    assert row.published_at is None
    with web.app_context():
        relay = df.get_state().make_relay()
        assert relay.relay_once() == 1
        assert relay.relay_once() == 0  # published rows are not published again
    dfapp = df.get_app(web)
    with WorkerThread(dfapp), web.app_context():
        assert greet.get_handle("greet-lee").result(timeout=30).startswith("hello lee")
    assert starts_of(dfapp, "greet-lee") == 1


def test_publishing_a_row_twice_starts_the_workflow_once(web: Flask) -> None:
    assert web.test_client().post("/greet/dup").status_code == 200
    assert flush_committed()
    with web.app_context():
        source = SQLAlchemyOutboxSource(db.engine)
        [row] = outbox_rows(web)
        with source.claim(1, keys=[row.id]) as claimed:
            assert claimed == []  # published already: nothing to claim
        dfapp = df.get_app()
        start = dfapp.prepare_start(greet, "dup", workflow_id="greet-dup")
        dfapp.publish_start(start)  # as a relay that crashed before marking it would
    assert starts_of(dfapp, "greet-dup") == 1


def test_a_failed_publish_is_retried_with_the_error_recorded(
    make_flask_app: Factory, database_uri: str
) -> None:
    web = make_flask_app(
        SQLALCHEMY_DATABASE_URI=database_uri,
        DF_NATS_URL="nats://127.0.0.1:9",  # nothing listens: the publish after commit fails
        DF_CONNECT_TIMEOUT=0.5,
    )
    assert web.test_client().post("/greet/kim").status_code == 200
    assert flush_committed()  # the publish failed on the publishing thread
    [row] = outbox_rows(web)
    assert row.published_at is None
    assert row.attempts == 1
    assert row.next_attempt_at is not None
    assert "onnect" in row.last_error  # the reason is kept for the operator


def test_a_plain_sqlalchemy_session_works_without_flask(make_app: Any, tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    create_outbox_tables(engine)
    app: App = make_app()
    with Session(engine) as session:
        start_in_transaction(session, app, "greet", "pat", workflow_id="greet-pat")
        session.commit()
    assert flush_committed()
    assert starts_of(app, "greet-pat") == 1
    relay = make_relay(app, [engine])
    assert relay.relay_once() == 0


def test_a_missing_outbox_table_says_how_to_create_it(make_app: Any, tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'bare.sqlite3'}")  # no create_outbox_tables
    app: App = make_app()
    with Session(engine) as session, pytest.raises(ConfigurationError) as info:
        start_in_transaction(session, app, "greet", "pat", workflow_id="greet-pat")
    assert "`flask df create-outbox`" in str(info.value)
    assert "dfcore_outbox" in str(info.value)


def test_a_table_of_an_earlier_version_gains_the_trace_column(
    make_app: Any, tmp_path: Any, nats_url: str, namespace: str
) -> None:
    """A table made before trace_context existed: a start says how to add the column, the
    create command adds it (rows kept), and a start's trace context then travels through it."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as connection:  # the table as 0.1 created it
        connection.exec_driver_sql(
            "CREATE TABLE dfcore_outbox (id INTEGER PRIMARY KEY, workflow_id VARCHAR(255) NOT "
            "NULL, workflow_type VARCHAR(255) NOT NULL, task_queue VARCHAR(255) NOT NULL, "
            "payload BLOB NOT NULL, created_at DATETIME NOT NULL, published_at DATETIME, "
            "attempts INTEGER NOT NULL, next_attempt_at DATETIME, last_error TEXT NOT NULL)"
        )
    app: App = make_app()
    app.add_observer(Carrier())
    with Session(engine) as session, pytest.raises(ConfigurationError) as info:
        start_in_transaction(session, app, "greet", "pat", workflow_id="greet-old")
    assert "`flask df create-outbox`" in str(info.value) and "lacks a column" in str(info.value)
    create_outbox_tables(engine)
    create_outbox_tables(engine)  # again: nothing to add
    with Session(engine) as session:
        start_in_transaction(session, app, "greet", "pat", workflow_id="greet-new")
        session.commit()
    assert flush_committed()
    with Session(engine) as session:
        stored = session.execute(select(outbox_table.c.trace_context)).scalar_one()
    assert json.loads(stored) == {"traceparent": Carrier.TRACEPARENT}
    first = first_history_message(nats_url, namespace, "greet-new")
    assert first.headers["traceparent"] == Carrier.TRACEPARENT


def test_a_burst_of_commits_is_published_in_batches(make_app: Any, tmp_path: Any) -> None:
    """Commits queue their rows while the thread publishes; it takes them in batches of the
    relay's size, and every row ends published."""
    engine = create_engine(f"sqlite:///{tmp_path / 'burst.sqlite3'}")
    create_outbox_tables(engine)
    app: App = make_app()
    for i in range(250):
        with Session(engine) as session:
            start_in_transaction(session, app, "greet", f"n{i}", workflow_id=f"greet-{i}")
            session.commit()
    assert flush_committed(timeout=60)
    with engine.connect() as connection:
        pending = connection.execute(
            select(func.count())
            .select_from(outbox_table)
            .where(outbox_table.c.published_at.is_(None))
        ).scalar()
    assert pending == 0
    assert app.get_handle("greet-249").status().status == "running"  # no worker: started
