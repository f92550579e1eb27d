"""Tracing and metrics on, for ``bench/burst.py --observe``: the OpenTelemetry SDK with a batch
span processor and a periodic metric reader, as a production setup has them, exporting to
nowhere (this machine has no collector: the export's own network cost is not measured).
Every trace is sampled unless ``--sample RATIO`` says otherwise (a tuned setting)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from dfcore import App
from dfcore.contrib.tracing import instrument


class Discard(SpanExporter):
    """Takes each batch of spans and drops it."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def observe(app: App, metrics: str) -> None:
    """Spans for ``app``, and its metrics through OpenTelemetry when ``metrics`` is ``otel``
    (``prometheus``: the worker command's ``--metrics-port`` serves them)."""
    ratio = float(os.environ.get("DF_BENCH_SAMPLE", "1"))  # burst.py --sample (tuned)
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=open(os.devnull, "w")),  # noqa: SIM115 - the process's life
        export_interval_millis=10_000,
    )
    instrument(
        app,
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        metrics=metrics == "otel",
    )
