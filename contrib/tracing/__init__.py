"""OpenTelemetry traces and metrics for DurableFuture: :func:`instrument`.

Needs ``pip install "durablefuture[tracing]"`` (the OpenTelemetry API). The SDK, its exporters and
the providers are yours: set them up as you do for the rest of your application, then::

    from dfcore.contrib.tracing import instrument

    instrument(app)                                   # the global tracer and meter providers
    instrument(app, tracer_provider=tp, meter_provider=mp)

in every process that starts workflows or runs workers (a Django ``AppConfig.ready``, a Flask app
factory, the module that defines the App). Nothing global is configured here. See
``docs/observability.md`` for what the spans and metrics are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace

from dfcore import App, Observer

from ._meters import OpenTelemetrySink, metrics_observer
from ._spans import Tracing

__all__ = ["Instrumentation", "OpenTelemetrySink", "Tracing", "instrument"]


@dataclass
class Instrumentation:
    """What :func:`instrument` added to an app; :meth:`uninstrument` takes it away again."""

    app: App
    observers: list[Observer] = field(default_factory=list)

    def uninstrument(self) -> None:
        """Stop making spans and metrics for new work (workers already made keep theirs)."""
        for observer in self.observers:
            self.app.remove_observer(observer)


def instrument(
    app: App,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: otel_metrics.MeterProvider | None = None,
    traces: bool = True,
    metrics: bool = True,
) -> Instrumentation:
    """Make spans (``traces``) and record the engine's metrics (``metrics``) for ``app``'s
    starts, workflow tasks and activity attempts, in this process and the workers it runs.

    Args:
        tracer_provider: where spans go (default: OpenTelemetry's global provider).
        meter_provider: where metrics go (default: the global one).
    """
    added = Instrumentation(app)
    if traces:
        added.observers.append(Tracing(tracer_provider))
    if metrics:
        added.observers.append(metrics_observer(meter_provider))
    for observer in added.observers:
        app.add_observer(observer)
    return added
