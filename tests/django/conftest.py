"""Django fixtures: the project App pointed at this test's server and namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from dfcore import App
from dfcore.integrations.django import get_app
from tests.conftest import require_postgres
from tests.workerkit import WorkerThread


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
