"""Flask fixtures: the test app on this test's server, namespace and database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from flask import Flask

from tests.conftest import require_postgres
from tests.flaskapp import create_app
from tests.workerkit import ROOT, popen

Factory = Callable[..., Flask]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test runs on a SQLite file and on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.sqlite3'}"
        return
    dsn = require_postgres()
    import psycopg

    schema = "t" + uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    base = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}?options=-csearch_path%3D{schema}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def flask_config(nats_url: str, namespace: str) -> dict[str, Any]:
    """DurableFuture settings for this test: the session's server, this test's namespace."""
    return {"DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace, "DF_RELAY_MIN_AGE": 0}


@pytest.fixture
def make_flask_app(flask_config: dict[str, Any], tmp_path: Path) -> Iterator[Factory]:
    """``create_app`` of the test app, on this test's settings (a SQLite file by default)."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'app.sqlite3'}")
        app = create_app({**flask_config, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_flask_app(app)


def close_flask_app(app: Flask) -> None:
    """Close the app's NATS connection and its database engines."""
    app.extensions["dfcore"].app.close()
    with app.app_context():
        for engine in app.extensions["sqlalchemy"].engines.values():
            engine.dispose()


def flask_process(
    *args: str, env: dict[str, str], output: Path | int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """``flask --app tests.flaskapp ARGS`` as a real process, with ``env`` added.

    ``output`` is a log file to append to, or a subprocess constant; stderr goes there too.
    """
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
    command = [sys.executable, "-m", "flask", "--app", "tests.flaskapp", *args]
    return popen(command, environ, output)
