"""Spans of a workflow's life, from what the engine tells its observers.

A workflow's trace hangs off the span current where it was started::

    POST /orders                                  (the user's request span, if any)
    └─ StartWorkflow:order                        producer, ends at once
       ├─ WorkflowTask:order                      one per decision the server accepted
       │  └─ RunActivity:charge  attempt 1        ERROR: the attempt failed
       ├─ Timer:retry                             the backoff: set -> fired
       ├─ WorkflowTask:order
       │  └─ RunActivity:charge  attempt 2
       ├─ WorkflowTask:order
       │  ├─ WorkflowTask:receipt ...             a child's spans hang off the decision
       │  └─ RunWorkflow:receipt                  that started it
       ├─ Signal:approve                          sent -> handed to the code
       └─ RunWorkflow:order                       the run, from its start to its end

The context travels in message headers (``traceparent``, ``tracestate``, ``baggage``): the start
carries the producer span's, a decision's activity tasks and child starts carry its span's. A
span is made only by the worker whose append the server accepted, so a replay on another worker
(after a crash, a restart, an eviction) makes none again, and the trace id, kept in the start's
headers in the history, stays the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from dfcore import (
    AttemptObservation,
    ObservedAttempt,
    ObservedInput,
    ObservedStart,
    ObservedTask,
    Observer,
)

_BAGGAGE = W3CBaggagePropagator()  # the start's baggage; traceparent is read and written here

_FAILED = {"failed", "timed_out", "cancelled"}


class Tracing(Observer):
    """An observer making OpenTelemetry spans; :func:`dfcore.contrib.tracing.instrument` adds it.

    Args:
        tracer_provider: where the spans go; the global provider (the user's, set with
            ``trace.set_tracer_provider``) when None. Nothing global is set here.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("dfcore", tracer_provider=tracer_provider)
        self._parents = _Parents()

    def start(self, start: ObservedStart) -> Mapping[str, str]:
        span = self.tracer.start_span(
            f"StartWorkflow:{start.workflow_type}",
            kind=SpanKind.PRODUCER,
            attributes={
                "dfcore.workflow_id": start.workflow_id,
                "dfcore.workflow_type": start.workflow_type,
                "dfcore.task_queue": start.task_queue,
            },
        )
        span.end()
        carried: dict[str, str] = {}
        _BAGGAGE.inject(carried)  # the caller's baggage, if it has any
        return _headers(span, carried)

    def workflow_task(self, task: ObservedTask) -> Mapping[str, str]:
        parent = self._parents.get(task.trace, task.workflow_id)
        attributes: dict[str, Any] = {
            "dfcore.workflow_id": task.workflow_id,
            "dfcore.run": task.run,
            "dfcore.history_seq": task.seq,
            "dfcore.cache": task.cache,
            "dfcore.commands": ",".join(task.commands),
        }
        if task.conflicts:
            attributes["dfcore.append_conflicts"] = task.conflicts
        if task.status is not None:
            attributes["dfcore.status"] = task.status
        span = self.tracer.start_span(
            f"WorkflowTask:{task.workflow_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            start_time=task.began_ns,
        )
        answered = [fact for fact in task.inputs if not self._input_span(fact, task, parent)]
        if answered:  # what has no span of its own: the start, results, a child's start or end
            span.set_attribute("dfcore.inputs", ", ".join(_fact(fact) for fact in answered))
        if task.status is not None:
            self._run_span(task, parent)
        span.end(end_time=task.ended_ns)
        return _headers(span, task.trace)  # the start's baggage goes on to what it starts

    def activity_attempt(self, attempt: ObservedAttempt) -> AttemptObservation:
        span = self.tracer.start_span(
            f"RunActivity:{attempt.activity}",
            context=self._parents.get(attempt.trace, attempt.workflow_id),
            kind=SpanKind.CONSUMER,
            attributes={
                "dfcore.workflow_id": attempt.workflow_id,
                "dfcore.run": attempt.run,
                "dfcore.activity_seq": attempt.seq,
                "dfcore.attempt": attempt.attempt,
            },
        )
        return _Attempt(span)

    def _input_span(
        self, fact: ObservedInput, task: ObservedTask, parent: otel_context.Context
    ) -> bool:
        """A timer or signal as a span of its own, from when it was set or sent to when the
        workflow got it; False for facts shown as events of the task's span."""
        if fact.kind not in ("timer", "signal") or fact.began_ms is None:
            return False
        # a timer ends when it fires; a signal when the workflow's code gets it (this task)
        ended = fact.at_ms * 1_000_000 if fact.kind == "timer" else task.began_ns
        span = self.tracer.start_span(
            f"{fact.kind.capitalize()}:{fact.name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={"dfcore.workflow_id": task.workflow_id, "dfcore.run": task.run},
            start_time=min(fact.began_ms * 1_000_000, ended),
        )
        span.end(end_time=ended)
        return True

    def _run_span(self, task: ObservedTask, parent: otel_context.Context) -> None:
        """The run as one span, made when it ends: its start to its end decision."""
        status = task.status or "completed"
        span = self.tracer.start_span(
            f"RunWorkflow:{task.workflow_type}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "dfcore.workflow_id": task.workflow_id,
                "dfcore.workflow_type": task.workflow_type,
                "dfcore.task_queue": task.task_queue,
                "dfcore.run": task.run,
                "dfcore.status": status,
            },
            start_time=min(task.started_ms * 1_000_000, task.ended_ns),
        )
        if status in _FAILED:
            span.set_status(Status(StatusCode.ERROR, task.failure or status))
        span.end(end_time=task.ended_ns)


class _Attempt(AttemptObservation):
    """An attempt's span: current while the activity's code runs (so spans it makes are its
    children), ended with the attempt's outcome."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self._token: Token[otel_context.Context] | None = None

    def running(self) -> AbstractContextManager[Any]:
        return self

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        span = self.span
        span.set_attribute("dfcore.outcome", outcome)
        if outcome != "completed":
            if error is not None:
                span.record_exception(error)
            detail = f"{type(error).__name__}: {error}" if error is not None else outcome
            span.set_status(Status(StatusCode.ERROR, detail))
        span.end()


def _fact(fact: ObservedInput) -> str:
    return f"{fact.kind} {fact.name}" + (" failed" if fact.failed else "")


def _headers(span: Span, carried: Mapping[str, str]) -> dict[str, str]:
    """The headers that make ``span`` the parent of what carries them, with the baggage
    ``carried`` had (W3C trace context, written as TraceContextTextMapPropagator would)."""
    ctx = span.get_span_context()
    headers = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
    if ctx.trace_state:
        headers["tracestate"] = ctx.trace_state.to_header()
    if "baggage" in carried:
        headers["baggage"] = carried["baggage"]
    return headers


class _Parents:
    """The contexts a workflow's messages carry, parsed once: a workflow's tasks all carry its
    start's headers, an attempt's retries their decision's."""

    SIZE = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[str | None, ...], otel_context.Context] = {}

    def get(self, headers: Mapping[str, str], workflow_id: str) -> otel_context.Context:
        key = (headers.get("traceparent"), headers.get("tracestate"), headers.get("baggage"))
        if key[0] is None:
            key = (None, None, workflow_id)
        parent = self._known.get(key)
        if parent is None:
            if len(self._known) >= self.SIZE:
                self._known.clear()
            parent = self._known[key] = _extract(headers, workflow_id)
        return parent


def _extract(headers: Mapping[str, str], workflow_id: str) -> otel_context.Context:
    """The context in ``headers``; without one (a start from a process that does not trace),
    a remote parent made from the workflow id, so the workflow's spans still share one trace
    on every worker."""
    remote = _traceparent(headers.get("traceparent", ""), headers.get("tracestate"))
    parent = _BAGGAGE.extract(headers) if "baggage" in headers else otel_context.Context()
    if remote is not None:
        return trace.set_span_in_context(NonRecordingSpan(remote), parent)
    digest = hashlib.sha256(workflow_id.encode()).digest()
    made = SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(made), parent)


def _traceparent(value: str, state: str | None) -> SpanContext | None:
    """A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``) as a remote span context, or
    None when it is not one (as TraceContextTextMapPropagator reads it, without regexes)."""
    parts = value.split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if (version == "00" and len(parts) != 4) or len(trace_hex) != 32 or len(span_hex) != 16:
        return None
    try:
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        flags = int(flags_hex, 16) if len(flags_hex) == 2 else -1
    except ValueError:
        return None
    if not trace_id or not span_id or flags < 0 or value != value.lower():
        return None
    trace_state = TraceState.from_header([state]) if state else None
    return SpanContext(trace_id, span_id, True, TraceFlags(flags), trace_state)
