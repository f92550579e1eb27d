"""One trace end to end: a Django view starts a workflow through the transactional outbox, an
activity fails once and retries, a child runs, the worker is killed with SIGKILL and another
replays the workflow and finishes it. Every span is in the request's trace, hangs off the span
it should, and none is made twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dfcore import App
from dfcore.contrib.tracing import instrument
from dfcore.integrations.django.models import OutboxEntry
from tests.django.conftest import django_process, manage_py
from tests.tracing.spans import Span, named, parent_of, read_spans
from tests.workerkit import sigkill, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.djangoapp.urls"),
    pytest.mark.slow,
]


@pytest.fixture
def traced(project_app: App) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    added = instrument(project_app, tracer_provider=provider, metrics=False)
    yield provider, exporter
    added.uninstrument()
    provider.shutdown()


def worker(trace_file: Path, log: Path, nats_url: str, namespace: str) -> Any:
    """``manage.py df_worker`` writing its spans to ``trace_file`` as each ends."""
    return django_process(
        *manage_py("df_worker", "--no-relay"),
        output=log,
        DF_NATS_URL=nats_url,
        DF_NAMESPACE=namespace,
        DF_TEST_TRACE_FILE=str(trace_file),
    )


def test_one_trace_from_a_view_through_the_outbox_across_a_sigkill(
    traced: tuple[TracerProvider, InMemorySpanExporter],
    project_app: App,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    processes: list[Any],
) -> None:
    provider, exporter = traced
    first, second = tmp_path / "worker-1.jsonl", tmp_path / "worker-2.jsonl"
    log = tmp_path / "workers.log"
    processes.append(proc := worker(first, log, nats_url, namespace))

    # The request's span is current in the view, as a web framework's instrumentation has it.
    with provider.get_tracer("web").start_as_current_span("POST /orders/{key}/") as request:
        answer = Client().post("/orders/k1/")
    assert answer.status_code == 202, answer.content
    handle = project_app.get_handle("traced-k1")
    entry = OutboxEntry.objects.get()
    assert json.loads(entry.trace_context)["traceparent"].split("-")[1] == (
        f"{request.get_span_context().trace_id:032x}"
    )

    # The retry and the child ran on the first worker; the workflow waits for its signal.
    child_ended = lambda: any(  # noqa: E731
        e.type == "ChildWorkflowEnded" for e in handle.history()
    )
    wait_until(child_ended, timeout=60, what="the child to end")
    wait_until(lambda: named(read_spans(first), "RunWorkflow:traced_receipt"), what="child span")
    sigkill(proc)

    processes.append(proc := worker(second, log, nats_url, namespace))
    handle.signal("ship", "ada")
    assert handle.result(timeout=60) == "hello charged k1, shipped by ada"
    wait_until(lambda: named(read_spans(second), "RunWorkflow:traced_order"), what="run span")
    proc.terminate()
    proc.wait(30)

    here = [Span.of(s) for s in exporter.get_finished_spans()]
    before, after = read_spans(first), read_spans(second)
    spans = here + before + after
    trace_id = f"0x{request.get_span_context().trace_id:032x}"
    assert {s.trace_id for s in spans} == {trace_id}, "one trace, across the restart"

    (start,) = named(spans, "StartWorkflow:traced_order")
    assert start in here and parent_of(spans, start).name == "POST /orders/{key}/"

    tasks = named(spans, "WorkflowTask:traced_order")
    assert all(parent_of(spans, t) == start for t in tasks)
    seqs = [t.attributes["dfcore.history_seq"] for t in tasks]
    assert len(seqs) == len(set(seqs)), "no decision was made into a span twice"
    # start; the failed attempt (a backoff timer); the timer (attempt 2); the charge (the
    # child); the child's start and end need no decision; after the restart, the signal.
    assert [t in after for t in tasks] == [False, False, False, False, True]
    assert tasks[-1].attributes["dfcore.cache"] == "replay"  # the new worker read the history

    attempts = named(spans, "RunActivity:charge_once_declined")
    assert [(a.attributes["dfcore.attempt"], a.status) for a in attempts] == [
        (1, "ERROR"),
        (2, "UNSET"),
    ]
    assert [parent_of(spans, a) for a in attempts] == [tasks[0], tasks[2]]

    child_tasks = named(spans, "WorkflowTask:traced_receipt")
    assert child_tasks and all(parent_of(spans, t) == tasks[3] for t in child_tasks)
    (receipt,) = named(spans, "RunActivity:greet")
    assert parent_of(spans, receipt) in child_tasks

    (signal,) = named(spans, "Signal:ship")
    (run,) = named(spans, "RunWorkflow:traced_order")
    assert signal in after and run in after
    assert parent_of(spans, signal) == start and parent_of(spans, run) == start
    names = [s.name for s in after]
    assert names.count("RunActivity:charge_once_declined") == 0, "the replay re-ran nothing"
