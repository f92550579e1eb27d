"""Shared fixtures: one real nats-server per test session, isolated by namespace per test."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest

from dfcore import App
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._server import EmbeddedServer

POSTGRES_DSN = os.environ.get("DF_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


#: The testing kit's fixtures (df_server, df_namespace, df_env), loaded as a user's suite would.
pytest_plugins = ["dfcore.testing.plugin"]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A nats-server with JetStream on a free port and a temporary store, for the whole run."""
    store = tmp_path_factory.mktemp("nats")
    server = EmbeddedServer(store, log_file=str(store / "nats-server.log"))
    with server:
        yield server


@pytest.fixture
def nats_url(nats_server: EmbeddedServer) -> str:
    """The client URL of the session's nats-server."""
    return nats_server.url


@pytest.fixture
def namespace() -> str:
    """A namespace unique to this test, so tests sharing one server never see each other."""
    return "t" + uuid4().hex[:10]


@functools.cache
def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can (checked once per run)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"cannot connect to {POSTGRES_DSN}: {exc}"


def require_postgres() -> str:
    """Return the test database DSN; skip the test without PostgreSQL, but fail under CI=true."""
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    return POSTGRES_DSN


@pytest.fixture
def postgres_dsn() -> str:
    """DSN of the PostgreSQL test database (skips locally without it, fails under CI=true)."""
    return require_postgres()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak`` runs the long soak tests (marked ``soak``), which are skipped otherwise."""
    parser.addoption("--soak", action="store_true", help="run the long fault-injection soak")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL, so ``-m 'not postgres'`` deselects them; skip
    the soak unless ``--soak`` was given."""
    soak = config.getoption("--soak")
    for item in items:
        if "postgres_dsn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if "soak" in item.keywords and not soak:
            item.add_marker(pytest.mark.skip(reason="the soak runs only with --soak"))


@pytest.fixture
def make_app(nats_url: str, namespace: str) -> Iterator[Callable[..., App]]:
    """A factory for Apps on this test's server and namespace (their connections closed after)."""
    apps: list[App] = []

    def make(url: str | None = None, **settings: Any) -> App:
        app = App("test", nats_url=url or nats_url, namespace=namespace, **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        run_sync(app.aclose())


@pytest.fixture
def nats_connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records every NATS connection the client opens during the test."""
    import dfcore.client._loop_client

    connects: list[Any] = []
    real_connect = dfcore.client._loop_client.connect

    async def counting_connect(*args: Any, **kwargs: Any) -> Any:
        connects.append(args)
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(dfcore.client._loop_client, "connect", counting_connect)
    return connects


@pytest.fixture
def orders_client(nats_url: str, namespace: str) -> Iterator[App]:
    """A client-only App of the order workflows (``tests/apps/orders.py``) on this namespace."""
    from .apps.orders import build_app

    app = build_app(nats_url=nats_url, namespace=namespace)
    yield app
    run_sync(app.aclose())


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes to kill if the test fails before stopping them itself."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
