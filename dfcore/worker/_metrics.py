"""Metrics from the engine's events: :class:`MetricsObserver` turns what an observer is told into
counts, durations and gauges for a :class:`MetricSink` (the worker's Prometheus endpoint, or
OpenTelemetry's metrics API in ``dfcore.contrib.tracing``).

Labels are few and bounded: workflow type, activity type, task queue, kind and outcome, never an
id. A label that sees more than :data:`MAX_LABEL_VALUES` values (a stray publisher inventing
workflow types) counts the rest as ``other``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from dfcore.core._observe import (
    AttemptObservation,
    AttemptOutcome,
    CacheOutcome,
    ObservedAttempt,
    ObservedGauges,
    ObservedQueue,
    ObservedTask,
    Observer,
)
from dfcore.jetstream._workers import QueueInfo

Kind = Literal["counter", "histogram", "gauge"]
Labels = Mapping[str, str]

MAX_LABEL_VALUES = 100  # distinct values a label keeps before the rest count as "other"
GAUGES_EVERY = 15.0  # seconds between a worker's reports of its gauges to its observers


@dataclass(frozen=True)
class Metric:
    """One metric: its Prometheus ``name`` (counters get ``_total``), its OpenTelemetry name,
    what it measures, its unit (``s`` or none) and its labels."""

    name: str
    otel: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str = ""


_WF = ("workflow_type", "task_queue")
_ACT = ("activity_type", "task_queue")

METRICS = (
    Metric(
        "dfcore_workflows_started",
        "dfcore.workflows.started",
        "counter",
        "Workflow runs whose first task a worker decided.",
        _WF,
    ),
    Metric(
        "dfcore_workflows_ended",
        "dfcore.workflows.ended",
        "counter",
        "Workflow runs ended, by outcome (completed, failed, cancelled, timed_out, continued).",
        (*_WF, "outcome"),
    ),
    Metric(
        "dfcore_workflow_duration_seconds",
        "dfcore.workflow.duration",
        "histogram",
        "From a workflow run's start to its end.",
        (*_WF, "outcome"),
        "s",
    ),
    Metric(
        "dfcore_activity_attempts",
        "dfcore.activity.attempts",
        "counter",
        "Activity attempts, by outcome (completed, failed, timed_out, cancelled).",
        (*_ACT, "outcome"),
    ),
    Metric(
        "dfcore_activity_duration_seconds",
        "dfcore.activity.duration",
        "histogram",
        "How long an activity attempt ran, by outcome.",
        (*_ACT, "outcome"),
        "s",
    ),
    Metric(
        "dfcore_activity_schedule_to_start_seconds",
        "dfcore.activity.schedule_to_start",
        "histogram",
        "From the server storing an activity task to a worker starting the attempt.",
        _ACT,
        "s",
    ),
    Metric(
        "dfcore_workflow_cache_lookups",
        "dfcore.workflow_cache.lookups",
        "counter",
        "Workflow tasks by what the cache held: hit (the run was cached), miss (a new run, "
        "nothing to read) or replay (its history was read and replayed).",
        ("task_queue", "outcome"),
    ),
    Metric(
        "dfcore_append_conflicts",
        "dfcore.append_conflicts",
        "counter",
        "Decisions whose append the server refused because another writer was first.",
        ("task_queue",),
    ),
    Metric(
        "dfcore_task_queue_backlog",
        "dfcore.task_queue.backlog",
        "gauge",
        "Tasks stored and not yet delivered to a worker, by kind (workflow, activity).",
        ("task_queue", "kind"),
    ),
    Metric(
        "dfcore_task_queue_in_flight",
        "dfcore.task_queue.in_flight",
        "gauge",
        "Tasks delivered to a worker and not yet done, by kind (workflow, activity).",
        ("task_queue", "kind"),
    ),
    Metric(
        "dfcore_workflow_cache_size",
        "dfcore.workflow_cache.size",
        "gauge",
        "Runs this worker holds in its cache.",
        ("task_queue",),
    ),
)
METRIC = {metric.name: metric for metric in METRICS}


class MetricSink(Protocol):
    """Where :class:`MetricsObserver` puts its figures; ``name`` is a :data:`METRICS` name."""

    def count(self, name: str, labels: Labels) -> None: ...

    def observe(self, name: str, labels: Labels, seconds: float) -> None: ...

    def gauge(self, name: str, labels: Labels, value: float) -> None: ...


class MetricsObserver(Observer):
    """An observer that keeps the engine's metrics (:data:`METRICS`) in ``sink``.

    Add one with :meth:`dfcore.App.add_observer`; a worker served with ``metrics_port`` (the
    worker commands' ``--metrics-port``) adds one of its own for its Prometheus endpoint.
    """

    def __init__(self, sink: MetricSink) -> None:
        self.sink = sink
        self._seen: dict[str, set[str]] = {}
        self._known: dict[tuple[tuple[str, str], ...], Labels] = {}
        self._lock = threading.Lock()

    def workflow_task(self, task: ObservedTask) -> Mapping[str, str]:
        sink = self.sink
        kind, queue = ("workflow_type", task.workflow_type), ("task_queue", task.task_queue)
        labels = self._labels(kind, queue)
        if any(fact.kind == "start" for fact in task.inputs):
            sink.count("dfcore_workflows_started", labels)
        if task.status is not None:
            ended = self._labels(kind, queue, ("outcome", task.status))
            sink.count("dfcore_workflows_ended", ended)
            lasted = task.ended_ns / 1e9 - task.started_ms / 1e3
            sink.observe("dfcore_workflow_duration_seconds", ended, max(lasted, 0))
        return {}

    def activity_attempt(self, attempt: ObservedAttempt) -> AttemptObservation:
        pairs = (("activity_type", attempt.activity), ("task_queue", attempt.task_queue))
        if attempt.scheduled_ms:
            waited = time.time() - attempt.scheduled_ms / 1e3
            self.sink.observe(
                "dfcore_activity_schedule_to_start_seconds", self._labels(*pairs), max(waited, 0)
            )
        return _TimedAttempt(self, pairs)

    def cache(self, task_queue: str, outcome: CacheOutcome) -> None:
        labels = self._labels(("task_queue", task_queue), ("outcome", outcome))
        self.sink.count("dfcore_workflow_cache_lookups", labels)

    def append_conflict(self, task_queue: str) -> None:
        self.sink.count("dfcore_append_conflicts", self._labels(("task_queue", task_queue)))

    def gauges(self, gauges: ObservedGauges) -> None:
        sink = self.sink
        for queue in gauges.queues:
            labels = self._labels(("task_queue", queue.task_queue), ("kind", queue.kind))
            sink.gauge("dfcore_task_queue_backlog", labels, queue.backlog)
            sink.gauge("dfcore_task_queue_in_flight", labels, queue.in_flight)
        for task_queue, size in gauges.cached_runs.items():
            sink.gauge("dfcore_workflow_cache_size", self._labels(("task_queue", task_queue)), size)

    def _labels(self, *pairs: tuple[str, str]) -> Labels:
        """The labels of ``pairs``, any value past a label's first :data:`MAX_LABEL_VALUES`
        made ``other``; made once for each combination (the same mapping each time after)."""
        labels = self._known.get(pairs)
        if labels is None:
            with self._lock:
                if len(self._known) >= 64 * MAX_LABEL_VALUES:  # raw values past the bound
                    self._known.clear()
                labels = self._known[pairs] = {name: self._bounded(name, v) for name, v in pairs}
        return labels

    def _bounded(self, name: str, value: str) -> str:
        seen = self._seen.setdefault(name, set())
        if value not in seen:
            if len(seen) >= MAX_LABEL_VALUES:
                return "other"
            seen.add(value)
        return value


class _TimedAttempt(AttemptObservation):
    def __init__(self, metrics: MetricsObserver, pairs: tuple[tuple[str, str], ...]) -> None:
        self.metrics = metrics
        self.pairs = pairs
        self.began = time.perf_counter()

    def end(self, outcome: AttemptOutcome, error: BaseException | None = None) -> None:
        labels = self.metrics._labels(*self.pairs, ("outcome", outcome))
        sink = self.metrics.sink
        sink.count("dfcore_activity_attempts", labels)
        sink.observe("dfcore_activity_duration_seconds", labels, time.perf_counter() - self.began)


def observed_queues(stats: Sequence[QueueInfo], served: Sequence[str]) -> Iterator[ObservedQueue]:
    """The figures of the queues a worker serves, a kind of task at a time."""
    for info in stats:
        if info.name in served:
            yield ObservedQueue(
                info.name, "workflow", info.workflow_backlog, info.workflow_in_flight
            )
            yield ObservedQueue(
                info.name, "activity", info.activity_backlog, info.activity_in_flight
            )
