"""``flask df worker|relay|workflow|create-outbox`` as real processes."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, select

from dfcore import WorkflowNotFoundError, cli
from dfcore.integrations.flask.cli import df_group
from dfcore.jetstream._server import free_port
from dfcore.outbox import flush_committed
from tests.flask.conftest import Factory, flask_process
from tests.flaskapp import Delivery, db, greet
from tests.workerkit import sigkill, visible_options, wait_until


@pytest.fixture
def env(flask_config: dict[str, Any], database_uri: str) -> dict[str, str]:
    """The environment of a `flask` process on this test's server, namespace and database."""
    return {
        **{key: str(value) for key, value in flask_config.items()},
        "FLASKAPP_DATABASE_URI": database_uri,
    }


@pytest.fixture
def worker_process(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `flask df worker` (with its outbox relay) for the test app."""
    log = tmp_path / "worker.log"
    proc = flask_process("df", "worker", "--loglevel", "DEBUG", env=env, output=log)
    yield proc
    if proc.poll() is None:
        sigkill(proc)
    if proc.returncode not in (0, -9):
        print(log.read_text())


def test_flask_df_runs_the_core_commands_with_real_help() -> None:
    names = ("worker", "dev", "workflow", "schedule", "dlq", "dashboard")
    assert {name: df_group.commands[name] for name in names} == {
        command.name: command for command in cli.COMMANDS
    }  # the very objects of the core CLI
    proc = flask_process("df", "worker", "--help", env={})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert re.match(r"Usage: .*flask df worker \[OPTIONS\]", out.decode())
    shown = set(re.findall(r"(--?[A-Za-z][a-z-]*)", out.decode()))
    assert visible_options(df_group.commands["worker"]) <= shown


def started(app: Flask, workflow_id: str) -> bool:
    with app.app_context():
        try:
            greet.get_handle(workflow_id).status()
        except WorkflowNotFoundError:
            return False
    return True


def test_the_worker_runs_activities_in_the_app_context_and_relays(
    make_flask_app: Factory, database_uri: str, worker_process: subprocess.Popen[bytes]
) -> None:
    web = make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri)
    quiet = make_flask_app(SQLALCHEMY_DATABASE_URI=database_uri, DF_PUBLISH_ON_COMMIT=False)
    assert web.test_client().post("/greet/ada").status_code == 200
    assert quiet.test_client().post("/greet/bo").status_code == 200  # left to the relay
    wait_until(lambda: started(web, "greet-bo"), 60, "the relay to publish greet-bo")
    with web.app_context():
        for name in ("ada", "bo"):
            result = greet.get_handle(f"greet-{name}").result(timeout=60)
            assert result == f"hello {name} from tests.flaskapp ({web.config['DF_NAMESPACE']})"
        # the worker process wrote these through Flask-SQLAlchemy, in its app context
        rows = db.session.execute(select(Delivery.workflow_id, Delivery.text)).all()
    assert sorted(wid for wid, _ in rows) == ["greet-ada", "greet-bo"]
    assert worker_process.poll() is None


def test_workflow_commands(
    make_flask_app: Factory, env: dict[str, str], worker_process: Any
) -> None:
    web = make_flask_app(SQLALCHEMY_DATABASE_URI=env["FLASKAPP_DATABASE_URI"])
    assert web.test_client().post("/greet/cy").status_code == 200
    assert flush_committed()
    with web.app_context():
        greet.get_handle("greet-cy").result(timeout=60)

    def flask_df(*args: str) -> str:
        proc = flask_process("df", *args, env=env)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        return out.decode()

    listing = flask_df("workflow", "list")
    assert re.search(r"greet-cy\s+completed", listing)
    shown = flask_df("workflow", "show", "greet-cy")
    assert "Workflow greet-cy (greet): completed" in shown
    assert "ActivityCompleted" in shown
    assert '"hello cy' in flask_df("workflow", "result", "greet-cy")
    missing = flask_process("df", "workflow", "show", "no-such-workflow", env=env)
    out, _ = missing.communicate(timeout=60)
    assert missing.returncode != 0
    assert b"no-such-workflow" in out
    assert b"Traceback" not in out
    assert "(no dead letters)" in flask_df("dlq", "list")
    assert "(no schedules)" in flask_df("schedule", "list")
    gone = flask_process("df", "dlq", "show", "99", env=env)
    out, _ = gone.communicate(timeout=60)
    assert gone.returncode != 0 and b"no dead letter 99" in out and b"Traceback" not in out


def test_create_outbox_makes_the_tables(tmp_path: Path, env: dict[str, str]) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    proc = flask_process("df", "create-outbox", env={**env, "DF_OUTBOX_DATABASE_URI": uri})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert b"outbox tables ready" in out
    tables = inspect(create_engine(uri)).get_table_names()
    assert {"dfcore_outbox", "dfcore_relay_lease"} <= set(tables)


def test_a_worker_without_a_server_ends_with_one_line_of_flask_advice(
    env: dict[str, str],
) -> None:
    proc = flask_process(
        "df", "worker", env={**env, "DF_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    )
    out, _ = proc.communicate(timeout=60)
    output = out.decode()
    assert proc.returncode != 0
    assert "Error: could not connect to NATS" in output
    assert "`flask df dev`" in output and "DF_NATS_URL in the Flask config" in output
    assert "dfcore -A" not in output and "Traceback" not in output


def test_dev_can_run_nats_alone_and_says_what_to_run_beside_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "dev.log"
    unset = {key: value for key, value in env.items() if key != "DF_NATS_URL"}
    dev = flask_process(
        "df", "dev", "--nats-only", "--data-dir", str(tmp_path / "df"), env=unset, output=log
    )
    try:
        banner = wait_until(
            lambda: "Ctrl-C stops the server" in log.read_text() and log.read_text(),
            timeout=60,
            what="flask df dev --nats-only to serve",
        )
        assert "Run a worker:   `flask df worker`" in banner
        assert "Run the site:   `flask run`" in banner
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(30) == 0, log.read_text()
    finally:
        if dev.poll() is None:
            sigkill(dev)
    assert "Traceback" not in log.read_text()
