"""A worker's Prometheus endpoint (``--metrics-port``), scraped over HTTP from a real worker
process: its counters agree with the work done."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import App
from dfcore.client._loopthread import run_sync

from .workerkit import spawn_worker, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The samples of ``/metrics``: ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def labelled(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value
        for series, value in samples.items()
        if series.partition("{")[0] == name and all(w in series for w in wanted)
    )


@pytest.fixture
def flaky(nats_url: str, namespace: str) -> Iterator[App]:
    from .apps.flaky import build_app

    app = build_app(nats_url=nats_url, namespace=namespace)
    yield app
    run_sync(app.aclose())


def test_a_scraped_worker_counts_the_work_done(
    flaky: App, nats_url: str, namespace: str, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    proc = spawn_worker(
        nats_url, namespace, "--metrics-port", str(port), app="tests.apps.flaky:app", log=log
    )
    processes.append(proc)

    def up() -> bool:
        try:
            return bool(scrape(port))
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, log.read_text()
            return False

    wait_until(up, what="the metrics endpoint")
    orders = [flaky.start("order", f"k{i}") for i in range(5)]
    broken = flaky.start("broken", "x")
    assert [h.result(timeout=60) for h in orders] == [f"shipped (charged k{i})" for i in range(5)]
    with pytest.raises(Exception, match="no such product"):
        broken.result(timeout=60)

    def counted() -> dict[str, float] | None:
        samples = scrape(port)
        return samples if labelled(samples, "dfcore_workflows_ended_total") == 6 else None

    samples = wait_until(counted, what="the ends counted")
    total = lambda name, **kw: labelled(samples, name, **kw)  # noqa: E731
    q = {"task_queue": "default"}
    assert total("dfcore_workflows_started_total", workflow_type="order", **q) == 5
    assert total("dfcore_workflows_started_total", workflow_type="broken", **q) == 1
    assert total("dfcore_workflows_ended_total", workflow_type="order", outcome="completed") == 5
    assert total("dfcore_workflows_ended_total", workflow_type="broken", outcome="failed") == 1
    charge = {"activity_type": "charge", **q}
    assert total("dfcore_activity_attempts_total", outcome="failed", **charge) == 5
    assert total("dfcore_activity_attempts_total", outcome="completed", **charge) == 5
    assert total("dfcore_activity_attempts_total", activity_type="ship") == 5
    assert total("dfcore_activity_duration_seconds_count", **charge) == 10
    assert total("dfcore_activity_schedule_to_start_seconds_count", **charge) == 10
    assert total("dfcore_workflow_duration_seconds_count", workflow_type="order") == 5
    # order: start, charge failed (backoff), retry timer, charge done, ship done: 5 decisions;
    # broken: 1. Every workflow task is one cache lookup, and this worker had them all cached.
    assert total("dfcore_workflow_cache_lookups_total") >= 5 * 5 + 1
    assert total("dfcore_workflow_cache_lookups_total", outcome="replay") == 0
    assert total("dfcore_append_conflicts_total") == 0
    # the gauges: the queue is drained, and the cache holds none of the ended runs
    assert samples['dfcore_task_queue_backlog{kind="workflow",task_queue="default"}'] == 0
    assert samples['dfcore_task_queue_in_flight{kind="activity",task_queue="default"}'] == 0
    assert samples['dfcore_workflow_cache_size{task_queue="default"}'] == 0
    # no series is labelled with an id
    assert not any("k1" in series or "workflow_id" in series for series in samples)

    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    proc.terminate()
    assert proc.wait(30) == 0


def test_a_taken_metrics_port_is_a_clear_error(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "worker.log"
        proc = spawn_worker(
            nats_url, namespace, "--metrics-port", str(port), app="tests.apps.flaky:app", log=log
        )
        assert proc.wait(60) != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log.read_text()
    assert "--metrics-port" in log.read_text()


def test_a_bad_metrics_port_is_a_usage_error(nats_url: str, namespace: str) -> None:
    proc = spawn_worker(nats_url, namespace, "--metrics-port", "x:y")
    proc.wait(60)
    assert proc.returncode == 2


def test_a_supervised_process_serves_on_its_own_port(
    nats_url: str, namespace: str, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    while True:  # two free ports in a row
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    proc = spawn_worker(nats_url, namespace, "-P", "2", "--metrics-port", str(port))
    processes.append(proc)

    def both() -> bool:
        try:
            return bool(scrape(port)) and bool(scrape(port + 1))
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until(both, timeout=60, what="both processes' endpoints")
    proc.terminate()
    assert proc.wait(60) == 0
