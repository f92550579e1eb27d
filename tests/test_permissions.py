"""Least-privilege NATS users for each role (docs/security.md, "Permissions").

A nats-server runs with the ``authorization`` block ``dfcore.jetstream._permissions.render``
prints. Each role does its job with exactly those permissions, and what a role must not do is
refused by the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from dfcore import App, DFError, EmbeddedServer
from dfcore.jetstream._naming import Layout
from dfcore.jetstream._permissions import ROLES, render

from .workerkit import WorkerThread, wait_until

PASSWORDS = {role: f"{role}-pw-1" for role in ROLES}


@pytest.fixture
def server(tmp_path: Path, namespace: str) -> Iterator[EmbeddedServer]:
    store = tmp_path / "nats"
    config = render(namespace, PASSWORDS)
    with EmbeddedServer(store, config_text=config, log_file=str(store / "log")) as running:
        yield running


@pytest.fixture
def role_app(server: EmbeddedServer, namespace: str) -> Iterator[Any]:
    apps: list[App] = []

    def make(role: str) -> App:
        app = App(
            f"perm-{role}",
            nats_url=server.url,
            namespace=namespace,
            nats_user=role,
            nats_password=PASSWORDS[role],
            connect_timeout=3,
        )

        @app.activity
        def shout(text: str) -> str:
            return text.upper()

        @app.workflow
        async def greet(ctx: Any, text: str) -> str:
            await ctx.sleep(0.1)  # a durable timer: a message schedule
            suffix = await ctx.wait_signal("suffix", timeout=60)  # left pending: purged at the end
            return await ctx.activity(shout, text) + str(suffix)

        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def test_each_role_does_its_job_with_only_its_permissions(
    role_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    worker, client, operator = role_app("worker"), role_app("client"), role_app("operator")
    with WorkerThread(worker):
        handle = client.start("greet", "hi", workflow_id="greet-1")
        wait_until(lambda: handle.status().status == "running", what="the workflow running")
        handle.signal("suffix", "!")
        assert handle.result(timeout=30) == "HI!"
        assert handle.history()[0].type == "WorkflowStarted"
        seen = operator.get_handle("greet-1")
        assert seen.status().status == "completed"
        assert [w.workflow_id for w in operator.list_workflows()] == ["greet-1"]
        assert operator.dead_letters() == []
        # What the dashboard reads: the index watched, the workers asked, the queues' figures.
        for reader in (client, operator):
            watch = reader.watch_workflows()
            assert next(watch).workflow_id == "greet-1"
            watch.close()
            assert [w.app for w in reader.workers(window=0.3)] == ["perm-worker"]
            assert [q.name for q in reader.queues()] == ["default"]
    # Nothing any of them did, the worker's stop (it unpins its partitions) included, was
    # refused by the server.
    assert not [r.getMessage() for r in caplog.records if "NATS refused" in r.getMessage()]


async def test_what_a_role_may_not_do_is_refused_by_the_server(
    role_app: Any, server: EmbeddedServer, namespace: str
) -> None:
    worker = role_app("worker")
    with WorkerThread(worker):  # creates the streams and consumers
        pass
    lay = Layout(namespace)
    for role, subject in [
        ("client", lay.task_subject("default")),  # a forged activity task
        ("client", lay.status_subject("default", "greet-1")),  # a forged outcome
        ("client", lay.dlq_subject("history")),
        ("client", f"$JS.API.STREAM.PURGE.{lay.history_stream}"),
        ("client", f"$JS.API.CONSUMER.CREATE.{lay.tasks_stream}.spy"),
        ("operator", lay.history_subject("default", "greet-2")),  # a start
    ]:
        refused = await _refusal(server.url, role, subject)
        assert "permissions violation" in refused.lower(), (role, subject)


async def _refusal(url: str, role: str, subject: str, timeout: float = 10.0) -> str:
    """Publish to ``subject`` as ``role``; the server's error about it."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, user=role, password=PASSWORDS[role], error_cb=on_error)
    try:
        await nc.publish(subject, b"{}")
        await nc.flush()
        deadline = time.monotonic() + timeout
        while not errors:
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not refuse {role} publishing to {subject}")
            await asyncio.sleep(0.02)
    finally:
        await nc.close()
    return errors[0]


def test_a_call_the_role_may_not_make_fails_with_a_clear_error(role_app: Any) -> None:
    worker, operator = role_app("worker"), role_app("operator")
    with WorkerThread(worker), pytest.raises(DFError, match="permission"):
        operator.start("greet", "hi")


def test_the_documented_permissions_are_the_ones_the_code_renders() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    assert render("shop") in docs
