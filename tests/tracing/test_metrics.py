"""The engine's metrics through OpenTelemetry's metrics API, read with the SDK's in-memory
reader: counters, histograms and gauges with their low-cardinality labels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from dfcore.client._loopthread import run_sync
from dfcore.contrib.tracing import instrument
from tests.apps.flaky import build_app
from tests.workerkit import WorkerThread


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Each metric's data points: (attributes, point)."""
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [(dict(p.attributes), p) for p in metric.data.data_points]
    return found


def test_counters_histograms_and_gauges(
    nats_url: str, namespace: str, reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, metric_reader = reader
    app = build_app(nats_url=nats_url, namespace=namespace)
    instrument(app, meter_provider=provider, traces=False)
    with WorkerThread(app):  # it reports its gauges as it starts, then every 15 s
        handles = [app.start("order", f"k{i}") for i in range(3)]
        assert all(h.result(timeout=60) for h in handles)
    found = points(metric_reader)

    def total(name: str, **labels: Any) -> float:
        return sum(
            p.value if hasattr(p, "value") else p.count
            for attrs, p in found[name]
            if labels.items() <= attrs.items()
        )

    assert total("dfcore.workflows.started", workflow_type="order", task_queue="default") == 3
    assert total("dfcore.workflows.ended", workflow_type="order", outcome="completed") == 3
    assert total("dfcore.activity.attempts", activity_type="charge", outcome="failed") == 3
    assert total("dfcore.activity.attempts", activity_type="charge", outcome="completed") == 3
    assert total("dfcore.activity.duration", activity_type="ship") == 3
    assert total("dfcore.workflow.duration", workflow_type="order") == 3
    assert total("dfcore.workflow_cache.lookups", outcome="hit") >= 1
    backlog = {attrs["kind"]: p.value for attrs, p in found["dfcore.task_queue.backlog"]}
    assert set(backlog) == {"workflow", "activity"}
    assert [p.value for _, p in found["dfcore.workflow_cache.size"]] == [0]
    keys = {key for series in found.values() for attrs, _ in series for key in attrs}
    assert keys <= {"workflow_type", "activity_type", "task_queue", "outcome", "kind"}
    run_sync(app.aclose())
