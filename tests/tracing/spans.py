"""Reading finished spans as a tree, from the SDK's in-memory exporter or from a file of
span JSON lines that a worker process wrote (:func:`file_provider`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor


@dataclass(frozen=True)
class Span:
    """What the tests look at of a finished span (ids as hex, as the JSON has them)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    status: str
    start_ns: int
    end_ns: int

    @classmethod
    def of(cls, span: ReadableSpan) -> Span:
        ctx = span.get_span_context()
        assert ctx is not None
        return cls(
            span.name,
            f"0x{ctx.trace_id:032x}",
            f"0x{ctx.span_id:016x}",
            f"0x{span.parent.span_id:016x}" if span.parent is not None else None,
            dict(span.attributes or {}),
            span.status.status_code.name,
            span.start_time or 0,
            span.end_time or 0,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Span:
        from datetime import datetime

        def ns(text: str) -> int:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000

        return cls(
            data["name"],
            data["context"]["trace_id"],
            data["context"]["span_id"],
            data["parent_id"],
            dict(data["attributes"]),
            data["status"]["status_code"],
            ns(data["start_time"]),
            ns(data["end_time"]),
        )


def file_provider(path: str | Path) -> TracerProvider:
    """A provider writing each span as it ends, one JSON line, to ``path`` (so a process
    killed with SIGKILL has written every span it ended)."""
    out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - the process's life
    exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def read_spans(path: Path) -> list[Span]:
    if not path.exists():
        return []
    return [Span.from_json(json.loads(line)) for line in path.read_text().splitlines() if line]


def named(spans: list[Span], prefix: str) -> list[Span]:
    return sorted((s for s in spans if s.name.startswith(prefix)), key=lambda s: s.start_ns)


def parent_of(spans: list[Span], span: Span) -> Span:
    (parent,) = [s for s in spans if s.span_id == span.parent_id]
    return parent


def as_timeline(spans: list[Span], workflow_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A trace as the dashboard's timeline draws a workflow (``Timeline.update(spans,
    summary)`` in contrib/dashboard/static/timeline.js): the run as the workflow bar, each
    attempt, timer, workflow task and child as a bar, each signal as a point."""
    ms = lambda ns: ns / 1e6  # noqa: E731
    bars: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for span in spans:
        kind, _, name = span.name.partition(":")
        attrs, ended = span.attributes, ms(span.end_ns)
        bar: dict[str, Any] = {"name": name, "start": ms(span.start_ns), "end": ended}
        outcome = "failed" if span.status == "ERROR" else "completed"
        if kind == "RunWorkflow" and attrs.get("dfcore.workflow_id") == workflow_id:
            summary = {
                "workflow_id": workflow_id,
                "workflow_type": name,
                "status": attrs.get("dfcore.status"),
                "started_at": ms(span.start_ns),
                "ended_at": ended,
            }
            continue
        if kind == "RunWorkflow":
            bar.update(kind="child", child_id=attrs["dfcore.workflow_id"], label=span.name)
        elif kind == "RunActivity":
            attempt = attrs["dfcore.attempt"]
            bar.update(kind="activity", seq=attrs["dfcore.activity_seq"], attempt=attempt)
            bar["label"] = f"{span.name} attempt {attempt}"
        elif kind in ("Timer", "Signal"):
            bar.update(kind=kind.lower(), label=span.name)
            if kind == "Signal":
                bar["start"] = ended
        else:  # WorkflowTask, StartWorkflow, the caller's own spans
            who = attrs.get("dfcore.workflow_id", "")
            bar.update(kind=kind or "span", name=f"{name} {who}".strip(), label=span.name)
        bar["outcome"] = outcome
        bars.append(bar)
    return bars, summary


def tree(spans: list[Span]) -> list[tuple[int, Span]]:
    """The spans depth first, each with its depth, children in the order they began."""
    ids = {s.span_id for s in spans}
    kids: dict[str | None, list[Span]] = {}
    for span in spans:
        kids.setdefault(span.parent_id if span.parent_id in ids else None, []).append(span)
    out: list[tuple[int, Span]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(kids.get(parent, []), key=lambda s: s.start_ns):
            out.append((depth, span))
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return out
