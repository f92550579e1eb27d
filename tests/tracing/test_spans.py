"""Spans of a workflow's life with the real OpenTelemetry SDK: one trace from the span current
where it was started, a span per decision, per activity attempt (a retry is a span of its own),
per timer and signal, the child's spans under the decision that started it; none twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dfcore import ApplicationError, RetryPolicy
from dfcore.contrib.tracing import instrument
from tests.workerkit import WorkerThread, wait_until

from .spans import Span, named, parent_of

pytest.importorskip("opentelemetry.sdk")


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> list[Span]:
    return [Span.of(s) for s in exporter.get_finished_spans()]


def test_one_trace_from_the_callers_span(make_app: Any, exporter: Any) -> None:
    provider, spans_out = exporter
    app = make_app()
    instrument(app, tracer_provider=provider, metrics=False)
    tries = {"n": 0}

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.05))
    def charge(amount: float) -> str:
        tries["n"] += 1
        with provider.get_tracer("shop").start_as_current_span("charge the card"):
            if tries["n"] == 1:
                raise ApplicationError("card declined once")
        return f"charged {amount}"

    @app.workflow
    async def receipt(ctx: Any, text: str) -> str:
        return text.upper()

    @app.workflow
    async def order(ctx: Any, amount: float) -> str:
        charged = await ctx.activity(charge, amount)
        await ctx.sleep(0.05)
        await ctx.wait_signal("approve")
        return await ctx.child(receipt, charged, workflow_id="order-t-receipt")

    with WorkerThread(app):
        with provider.get_tracer("web").start_as_current_span("POST /orders") as request:
            handle = order.start(10.0, workflow_id="order-t")  # the sync call, from a "view"
        fired = lambda: [e for e in handle.history() if e.type == "TimerFired"]  # noqa: E731
        wait_until(lambda: len(fired()) == 2, what="the retry's timer and the sleep")
        handle.signal("approve", True)
        assert handle.result(timeout=30) == "CHARGED 10.0"
        wait_until(lambda: named(finished(spans_out), "RunWorkflow:order"), what="the run span")

    spans = finished(spans_out)
    trace_id = f"0x{request.get_span_context().trace_id:032x}"
    assert {s.trace_id for s in spans} == {trace_id}, "one trace, the request's"

    (start,) = named(spans, "StartWorkflow:order")
    assert parent_of(spans, start).name == "POST /orders"
    assert start.attributes["dfcore.workflow_id"] == "order-t"

    tasks = named(spans, "WorkflowTask:order")
    assert len(tasks) == 6 and all(parent_of(spans, t) == start for t in tasks)
    seqs = [t.attributes["dfcore.history_seq"] for t in tasks]
    assert len(set(seqs)) == len(seqs), "a decision is one span"
    assert tasks[0].attributes["dfcore.cache"] == "miss"
    assert tasks[-1].attributes["dfcore.status"] == "completed"

    attempts = named(spans, "RunActivity:charge")
    assert [(a.attributes["dfcore.attempt"], a.status) for a in attempts] == [
        (1, "ERROR"),
        (2, "UNSET"),
    ]
    assert [a.attributes["dfcore.outcome"] for a in attempts] == ["failed", "completed"]
    # each under the decision that scheduled it; the retry's, after the backoff timer
    assert parent_of(spans, attempts[0]) == tasks[0]
    assert parent_of(spans, attempts[1]) == tasks[2]
    # the activity's own spans are children of its attempt
    inner = named(spans, "charge the card")
    assert [parent_of(spans, s) for s in inner] == attempts

    (timer,) = named(spans, "Timer:sleep")
    (signal,) = named(spans, "Signal:approve")
    assert parent_of(spans, timer) == start and parent_of(spans, signal) == start
    assert timer.end_ns - timer.start_ns >= 50_000_000  # from when it was set to when it fired

    child_tasks = named(spans, "WorkflowTask:receipt")
    assert child_tasks and all(parent_of(spans, t) == tasks[4] for t in child_tasks)
    (child_run,) = named(spans, "RunWorkflow:receipt")
    assert parent_of(spans, child_run) == tasks[4]

    (run,) = named(spans, "RunWorkflow:order")
    assert parent_of(spans, run) == start and run.attributes["dfcore.status"] == "completed"
    assert run.start_ns <= tasks[0].start_ns and run.end_ns >= tasks[-1].start_ns


def test_a_failed_workflow_and_a_replay(make_app: Any, exporter: Any) -> None:
    """A worker that did not cache the run replays its history and makes spans only for its
    own decision; the run's span of a failed workflow has ERROR and the failure."""
    provider, spans_out = exporter
    app = make_app()
    instrument(app, tracer_provider=provider, metrics=False)

    @app.activity
    def reserve() -> str:
        return "reserved"

    @app.workflow
    async def doomed(ctx: Any) -> None:
        await ctx.activity(reserve)
        await ctx.wait_signal("go")
        raise ApplicationError("out of stock")

    with WorkerThread(app):
        handle = doomed.start(workflow_id="doomed-1")
        done = lambda: any(e.type == "ActivityCompleted" for e in handle.history())  # noqa: E731
        wait_until(done, what="the activity's completion")
    with WorkerThread(app):
        handle.signal("go", 1)
        with pytest.raises(Exception, match="out of stock"):
            handle.result(timeout=30)
        wait_until(lambda: named(finished(spans_out), "RunWorkflow:doomed"), what="the run")
    spans = finished(spans_out)
    tasks = named(spans, "WorkflowTask:doomed")
    assert [t.attributes["dfcore.cache"] for t in tasks] == ["miss", "replay"]
    assert len({s.trace_id for s in spans}) == 1
    (run,) = named(spans, "RunWorkflow:doomed")
    assert run.status == "ERROR" and run.attributes["dfcore.status"] == "failed"


def test_trace_context_is_not_in_payloads_under_encryption(
    make_app: Any, exporter: Any, nats_url: str, namespace: str
) -> None:
    pytest.importorskip("cryptography")
    from dfcore.contrib.encryption import AESGCMCodec
    from tests.test_observe import first_history_message

    provider, spans_out = exporter
    app = make_app(codec=AESGCMCodec(AESGCMCodec.generate_key()))
    instrument(app, tracer_provider=provider, metrics=False)

    @app.workflow
    async def secret(ctx: Any) -> str:
        return "ok"

    with WorkerThread(app):
        assert secret.start(workflow_id="secret-1").result(timeout=30) == "ok"
    first = first_history_message(nats_url, namespace, "secret-1")
    (start,) = named(finished(spans_out), "StartWorkflow:secret")
    assert start.span_id[2:] in first.headers["traceparent"]
    assert first.data.startswith(b"DFE")  # the payload is ciphertext, and the context isn't in it
    assert named(finished(spans_out), "WorkflowTask:secret")


def test_a_start_without_trace_context_still_makes_one_trace(
    nats_url: str, namespace: str, exporter: Any
) -> None:
    """Started by a process that does not trace: the workers' spans of the workflow share one
    trace, made from its id, whichever worker makes them."""
    import hashlib

    from dfcore.client._loopthread import run_sync
    from tests.apps.flaky import build_app

    provider, spans_out = exporter
    client = build_app(nats_url=nats_url, namespace=namespace)
    worker_app = build_app(nats_url=nats_url, namespace=namespace)
    instrument(worker_app, tracer_provider=provider, metrics=False)
    try:
        with WorkerThread(worker_app):
            handle = client.start("order", "k9", workflow_id="untraced-1")
            assert handle.result(timeout=30) == "shipped (charged k9)"
            wait_until(lambda: named(finished(spans_out), "RunWorkflow:order"), what="run span")
    finally:
        run_sync(client.aclose())
        run_sync(worker_app.aclose())
    spans = finished(spans_out)
    made = hashlib.sha256(b"untraced-1").digest()[:16].hex()
    assert {s.trace_id for s in spans} == {f"0x{made}"}
    assert not named(spans, "StartWorkflow")
    attempts = named(spans, "RunActivity:charge")
    assert [a.status for a in attempts] == ["ERROR", "UNSET"]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 has 4 parts
        "00-xyz7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # not hex
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",  # short flags
    ],
)
def test_a_stray_traceparent_is_not_taken(value: str) -> None:
    from dfcore.contrib.tracing._spans import _traceparent

    assert _traceparent(value, None) is None


def test_a_traceparent_is_read_as_the_w3c_propagator_reads_it() -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from dfcore.contrib.tracing._spans import _traceparent

    value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    ours = _traceparent(value, state)
    theirs = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": value, "tracestate": state})
    ).get_span_context()
    assert ours == theirs
    future = _traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more", None)
    assert future is not None and future.trace_id == theirs.trace_id  # a later version's extra
