"""Faults in worker processes and the server: SIGKILL at a random moment, then recover.

Each test runs 100 order workflows (two activities each) through real ``df worker`` processes
and checks, with :meth:`OrderBatch.check`, that every workflow completed with the right result,
none started twice, and each used every activity result exactly once. Activities may run more
than once (at least once); the report counts how often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import EmbeddedServer

from .harness import OrderBatch

pytestmark = pytest.mark.slow


@pytest.fixture
def batch(tmp_path: Path, namespace: str) -> Iterator[Callable[..., OrderBatch]]:
    """Make an OrderBatch on this test's namespace; its processes are stopped afterwards."""
    made: list[OrderBatch] = []

    def make(fault: str, nats_url: str, **options: Any) -> OrderBatch:
        made.append(OrderBatch(fault, tmp_path, nats_url, namespace, **options))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def test_sigkill_of_the_workflow_worker(batch: Any, nats_url: str) -> None:
    run = batch("SIGKILL workflow worker", nats_url)
    run.spawn("activities", "--activities-only")
    run.spawn("workflows-1", "--workflows-only")
    run.start()
    run.wait_for_progress()
    run.kill("workflows-1")
    run.spawn("workflows-2", "--workflows-only")
    run.check(run.finish())


def test_sigkill_of_the_activity_worker(batch: Any, nats_url: str) -> None:
    run = batch("SIGKILL activity worker", nats_url)
    run.spawn("workflows", "--workflows-only")
    run.spawn("activities-1", "--activities-only")
    run.start()
    run.wait_for_progress()
    run.kill("activities-1")
    run.spawn("activities-2", "--activities-only")
    report = run.finish()
    run.check(report)
    # The kill really hit attempts in flight: they were recorded as lost and retried.
    assert report.failed_attempts > 0, run.describe()


@pytest.mark.parametrize("sync", [None, "always"], ids=["default-fsync", "sync-always"])
def test_sigkill_of_the_server_and_restart_on_the_same_store(
    batch: Any, tmp_path: Path, sync: str | None
) -> None:
    # Acked appends survive a SIGKILL of the server process with either fsync policy (the
    # kernel still holds what was written); `sync_interval: always` also covers an OS crash
    # or power loss, which no test here can cause (docs/architecture.md, "Durability").
    config = f"jetstream {{ sync_interval: {sync} }}\n" if sync else None
    server = EmbeddedServer(
        tmp_path / "nats", log_file=str(tmp_path / "nats.log"), config_text=config
    )
    with server:
        name = "SIGKILL nats-server, restart on same store"
        run = batch(name + (f" (sync_interval: {sync})" if sync else ""), server.url)
        run.spawn("workflows", "--workflows-only")
        run.spawn("activities", "--activities-only")
        run.start()
        run.wait_for_progress()
        server.kill()
        server.start()  # same port and store; the workers are not restarted
        assert all(proc.poll() is None for proc in run.processes.values())
        run.check(run.finish())


def test_an_activity_longer_than_the_ack_wait_runs_once(batch: Any, nats_url: str) -> None:
    # Every activity takes 4 to 5 s; JetStream would redeliver after 2 s without progress.
    env = {"DF_ACTIVITY_ACK_WAIT": "2", "DF_FAULT_MIN_PAUSE": "4", "DF_FAULT_PAUSE": "5"}
    run = batch("activity longer than ack wait (4-5 s vs 2 s)", nats_url, env=env)
    run.spawn("workflows", "--workflows-only")
    run.spawn("activities-1", "--activities-only", "--concurrency", "100")
    run.spawn("activities-2", "--activities-only", "--concurrency", "100")
    run.start()
    report = run.finish()
    run.check(report)
    assert report.activity_reexecutions == 0, run.describe()
    assert report.failed_attempts == 0, run.describe()


def test_two_workflow_workers_racing(batch: Any, nats_url: str) -> None:
    # Without a cache every workflow task replays the history, so the two workers decide
    # for the same workflows at the same moments and the expected-sequence check arbitrates.
    env = {"DF_WORKFLOW_CACHE_SIZE": "0", "DF_FAULT_PAUSE": "0.02"}
    run = batch("two workflow workers racing (no cache)", nats_url, env=env)
    run.spawn("workflows-1", "--workflows-only")
    run.spawn("workflows-2", "--workflows-only")
    run.spawn("activities", "--activities-only")
    run.start()
    report = run.finish()
    run.check(report)
    assert report.activity_reexecutions == 0, run.describe()
