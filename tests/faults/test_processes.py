"""Faults in worker processes and the server: SIGKILL at a random moment, then recover.

Each test runs 100 order workflows (two activities each) through real ``dfcore worker`` processes,
three of them serving workflows (their partitions split between them, docs/architecture.md,
"Affinity"), and checks, with :meth:`OrderBatch.check`, that every workflow completed with the
right result, none started twice, and each used every activity result exactly once. Activities
may run more than once (at least once); the report counts how often.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import EmbeddedServer

from ..workerkit import wait_until
from .harness import OrderBatch

ACK_WAIT = 3.0  # the harness's DF_WORKFLOW_ACK_WAIT
RUN_AGAIN = "delivered again without an outcome; running it again"  # the activity worker's log
SETTLED = "its outcome is already recorded; acked without running it"

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


def spawn_workflow_workers(run: OrderBatch, count: int = 3) -> None:
    for i in range(1, count + 1):
        run.spawn(f"workflows-{i}", "--workflows-only")


def test_sigkill_of_a_workflow_worker(batch: Any, nats_url: str) -> None:
    # Its partitions, and the running workflows cached there, move to the other two.
    run = batch("SIGKILL 1 of 3 workflow workers", nats_url)
    run.spawn("activities", "--activities-only")
    spawn_workflow_workers(run)
    run.start()
    run.wait_for_progress()
    run.kill("workflows-1")
    run.check(run.finish())


def test_sigkill_of_the_only_workflow_worker_then_a_new_one(batch: Any, nats_url: str) -> None:
    run = batch("SIGKILL the only workflow worker, start another", nats_url)
    run.spawn("activities", "--activities-only")
    run.spawn("workflows-1", "--workflows-only")
    run.start()
    run.wait_for_progress()
    run.kill("workflows-1")
    run.spawn("workflows-2", "--workflows-only")
    run.check(run.finish())


def test_a_workflow_worker_frozen_past_the_ack_wait(batch: Any, nats_url: str) -> None:
    # SIGSTOP one of three: the other two presume it dead and take its partitions, so the whole
    # batch completes while it is frozen. Woken, its stale work is refused by the expected-
    # sequence check and it rejoins. Nothing may be used twice, before or after it wakes.
    run = batch("SIGSTOP 1 of 3 workflow workers until the batch is done", nats_url)
    run.spawn("activities", "--activities-only")
    spawn_workflow_workers(run)
    run.start()
    run.wait_for_progress(0.1, 0.3)
    run.pause("workflows-1")
    frozen_at = time.monotonic()
    run.check(run.finish(stop=False))
    # The fault's length, not a synchronisation: frozen past workflow_ack_wait (3 s) at least.
    time.sleep(max(0.0, frozen_at + 3 * ACK_WAIT - time.monotonic()))
    run.resume("workflows-1")
    wait_until(
        lambda: "rejoining" in run.log_of("workflows-1"), timeout=30, what="the frozen one waking"
    )
    run.check(run.finish())
    # It drained and exited cleanly on SIGTERM, with nothing of its stale work left to raise.
    assert run.processes["workflows-1"].returncode == 0, run.log_of("workflows-1")[-3000:]
    assert "Traceback" not in run.log_of("workflows-1"), run.log_of("workflows-1")[-3000:]


def test_sigkill_of_the_activity_worker(batch: Any, nats_url: str) -> None:
    run = batch("SIGKILL activity worker", nats_url)
    spawn_workflow_workers(run)
    run.spawn("activities-1", "--activities-only")
    run.start()
    run.wait_for_progress()
    run.kill("activities-1")
    run.spawn("activities-2", "--activities-only")
    run.check(run.finish())
    # The kill really hit attempts in flight: each came back once and was run again.
    assert RUN_AGAIN in run.log_of("activities-2"), run.describe()


def test_an_activity_worker_frozen_past_the_ack_wait(batch: Any, nats_url: str) -> None:
    # SIGSTOP an activity worker while it alone serves the queue, so it surely holds tasks,
    # then start a second one; the default policy's three attempts. The tasks the frozen one
    # held, running or only delivered to it, come back after the ack wait and run on the
    # other one without costing an attempt; woken, its late results are not used.
    env = {"DF_ACTIVITY_ACK_WAIT": "2", "DF_FAULT_MAX_ATTEMPTS": "3"}
    run = batch("SIGSTOP 1 of 2 activity workers for 10 s", nats_url, env=env)
    spawn_workflow_workers(run)
    # Room for more than the batch ever runs at once: its pull requests are always open, so
    # tasks published just after the freeze wait in it, unstarted, as well as those running.
    run.spawn("activities-1", "--activities-only", "--concurrency", "300")
    run.start(slice(0, 80))
    run.wait_for_progress(0.1, 0.3)
    run.pause("activities-1")
    frozen_at = time.monotonic()
    # The last workflows start now: their first tasks are delivered to the frozen worker (its
    # open pull requests are the only ones), where they wait unstarted.
    held = run.unacked_activities()
    run.start(slice(80, None))
    wait_until(lambda: run.unacked_activities() > held, what="tasks delivered to the frozen one")
    run.spawn("activities-2", "--activities-only")
    report = run.finish(stop=False)
    run.check(report)
    assert report.failed_attempts == 0, run.describe()
    assert RUN_AGAIN in run.log_of("activities-2"), run.describe()  # the freeze held tasks
    time.sleep(max(0.0, frozen_at + 10.0 - time.monotonic()))  # the fault's length
    run.resume("activities-1")
    wait_until(lambda: "was paused" in run.log_of("activities-1"), what="the frozen one waking")
    # Woken, it checks the tasks that waited in it against their histories: the other worker
    # ran them meanwhile, so it does not. (Those it was running when frozen just finish.)
    wait_until(lambda: SETTLED in run.log_of("activities-1"), what="held tasks found settled")
    report = run.finish()
    run.check(report)
    assert report.failed_attempts == 0, run.describe()


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
        spawn_workflow_workers(run)
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
    spawn_workflow_workers(run)
    run.spawn("activities-1", "--activities-only", "--concurrency", "100")
    run.spawn("activities-2", "--activities-only", "--concurrency", "100")
    run.start()
    report = run.finish()
    run.check(report)
    assert report.activity_reexecutions == 0, run.describe()
    assert report.failed_attempts == 0, run.describe()


def test_three_workflow_workers_without_a_cache(batch: Any, nats_url: str) -> None:
    # Without a cache every workflow task replays the history; while the three workers
    # agree on their partitions at start-up, two may decide for the same workflow at once
    # and the expected-sequence check arbitrates.
    env = {"DF_WORKFLOW_CACHE_SIZE": "0", "DF_FAULT_PAUSE": "0.02"}
    run = batch("three workflow workers (no cache)", nats_url, env=env)
    spawn_workflow_workers(run)
    run.spawn("activities", "--activities-only")
    run.start()
    report = run.finish()
    run.check(report)
    assert report.activity_reexecutions == 0, run.describe()
