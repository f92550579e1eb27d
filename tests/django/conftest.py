"""Django fixtures: the project App pointed at this test's server and namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from dfcore import App
from dfcore.integrations.django import get_app
from tests.conftest import require_postgres
from tests.workerkit import ROOT, WorkerThread, popen

SHOP = ROOT / "example_projects" / "django_shop"


@pytest.fixture(autouse=True)
def dfcore_settings(settings: Any, nats_url: str, namespace: str) -> dict[str, Any]:
    """``settings.DFCORE`` for this test: the session's server, this test's namespace."""
    settings.DFCORE = {"NATS_URL": nats_url, "NAMESPACE": namespace, "RELAY_MIN_AGE": 0}
    return settings.DFCORE


@pytest.fixture
def project_app() -> App:
    """The project's App, configured from the test's DFCORE."""
    return get_app()


@pytest.fixture
def worker(project_app: App) -> Iterator[WorkerThread]:
    """A worker for the project App, running in a thread for the test."""
    with WorkerThread(project_app) as thread:
        yield thread


#: The databases of the Django tests: SQLite always, PostgreSQL where configured.
ALIASES = [alias for alias in ("default", "pg") if alias in django_settings.DATABASES]

#: Mark for tests that commit for real, on every database.
on_all_databases = pytest.mark.django_db(transaction=True, databases=ALIASES)


@pytest.fixture(params=["default", "pg"])
def db_alias(request: pytest.FixtureRequest) -> str:
    """Each outbox test runs on SQLite (``default``) and on PostgreSQL (``pg``)."""
    if request.param == "pg":
        require_postgres()
        if "pg" not in django_settings.DATABASES:
            pytest.skip("no pg database configured")
    return str(request.param)


def django_process(
    *args: str, output: Path | int = subprocess.PIPE, **env: str
) -> subprocess.Popen[bytes]:
    """``python ARGS`` on the test settings and databases, with ``env`` added.

    The child inherits ``DF_TEST_DB_TAG``, so it opens the same SQLite file and PostgreSQL
    test database as this run. ``output`` is a log file to append to, or a subprocess
    constant (``PIPE``, ``DEVNULL``); stderr goes to the same place.
    """
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.django_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SHOP)]),
        "PYTHONUNBUFFERED": "1",  # a log shows output as it happens
        **env,
    }
    return popen([sys.executable, *args], environ, output)


def manage_py(*args: str) -> tuple[str, ...]:
    """The arguments that run the example project's ``manage.py ARGS``."""
    return (str(SHOP / "manage.py"), *args)
