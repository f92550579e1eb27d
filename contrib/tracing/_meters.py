"""The engine's metrics (``dfcore.METRICS``) through OpenTelemetry's metrics API."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Observation

from dfcore import METRICS, MetricsObserver

BATCH = 256  # histogram values recorded together
# Seconds, as the worker's Prometheus endpoint has them (an advice the SDK may take).
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class OpenTelemetrySink:
    """A :class:`dfcore.MetricSink` recording on a meter of ``meter_provider`` (the global
    provider when None).

    Counters are kept here, a dict increment each, and are observable counters the SDK reads
    when it collects (their values are cumulative, as a counter's are); gauges likewise, from
    the worker's last report. Histogram values wait in a list and are recorded a batch at a
    time, every :data:`BATCH` values and whenever the SDK collects, so the SDK's recording code
    runs in one stretch rather than once on every task's path (measured in bench/burst.py).
    """

    def __init__(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter("dfcore", meter_provider=meter_provider)
        self._histograms: dict[str, Histogram] = {}
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._lock = threading.Lock()
        self._waiting: list[tuple[Histogram, Mapping[str, str], float]] = []
        advisory = (
            "explicit_bucket_boundaries_advisory"
            in inspect.signature(meter.create_histogram).parameters
        )
        for metric in METRICS:
            if metric.kind == "histogram":
                options: dict[str, Any] = (
                    {"explicit_bucket_boundaries_advisory": BUCKETS} if advisory else {}
                )
                self._histograms[metric.name] = meter.create_histogram(
                    metric.otel, unit=metric.unit, description=metric.help, **options
                )
            else:
                self._values[metric.name] = {}
                create = (
                    meter.create_observable_counter
                    if metric.kind == "counter"
                    else meter.create_observable_gauge
                )
                create(
                    metric.otel,
                    callbacks=[self._reader(metric.name)],
                    unit=metric.unit,
                    description=metric.help,
                )

    def count(self, name: str, labels: Mapping[str, str]) -> None:
        series = self._values[name]
        key = tuple(labels.items())
        with self._lock:
            series[key] = series.get(key, 0) + 1

    def observe(self, name: str, labels: Mapping[str, str], seconds: float) -> None:
        with self._lock:  # the SDK's collection flushes from its own thread
            self._waiting.append((self._histograms[name], labels, seconds))
            full = len(self._waiting) >= BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        """Record the histogram values that wait (the SDK's collection calls it first)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for histogram, labels, seconds in waiting:
            histogram.record(seconds, labels)

    def gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._values[name][tuple(labels.items())] = value

    def _reader(self, name: str) -> Any:
        def read(options: CallbackOptions) -> Iterable[Observation]:
            self.flush()  # callbacks run before the SDK reads its histograms
            with self._lock:
                values = list(self._values[name].items())
            return [Observation(value, dict(labels)) for labels, value in values]

        return read


def metrics_observer(meter_provider: metrics.MeterProvider | None = None) -> MetricsObserver:
    """An observer keeping the engine's metrics on ``meter_provider``."""
    return MetricsObserver(OpenTelemetrySink(meter_provider))
