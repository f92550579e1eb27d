"""A workflow's trace as a viewer shows it, in a real Chromium: the spans the real SDK
recorded, drawn by the dashboard's own timeline (contrib/dashboard/static/timeline.js) above
the span tree, the way Jaeger lays out a trace (Jaeger itself does not install here).

The screenshot goes to ``DF_SCREENSHOT_DIR`` (default ``.df/screenshots``);
docs/observability.md shows the one taken with ``DF_SCREENSHOT_DIR=docs/images``."""

from __future__ import annotations

import functools
import html
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dfcore.contrib.dashboard as dashboard
from dfcore import ApplicationError, RetryPolicy, activity
from dfcore.contrib.tracing import instrument
from tests.dashboard.kit import SHOTS, chromium
from tests.workerkit import WorkerThread, wait_until

from .spans import Span, as_timeline, named, tree

pytestmark = pytest.mark.timeout(300)
STATIC = Path(dashboard.__file__).parent / "static"


def traced_order(make_app: Any) -> list[Span]:
    """An order's spans: a request, a declined charge and its retry, a sleep, a signal, a
    child workflow."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = make_app()
    instrument(app, tracer_provider=provider, metrics=False)

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.2))
    def charge(amount: float) -> str:
        if activity.info().attempt == 1:
            raise ApplicationError("card declined")
        return f"ch_{int(amount)}"

    @app.activity
    async def print_label(charge_id: str) -> str:
        return f"label for {charge_id}"

    @app.workflow
    async def shipping(ctx: Any, charge_id: str) -> str:
        return await ctx.activity(print_label, charge_id)

    @app.workflow
    async def order(ctx: Any, amount: float) -> str:
        charge_id = await ctx.activity(charge, amount)
        await ctx.sleep(0.3)
        await ctx.wait_signal("approve")
        return await ctx.child(shipping, charge_id, workflow_id="order-7-shipping")

    with WorkerThread(app):
        with provider.get_tracer("web").start_as_current_span("POST /orders"):
            handle = order.start(70.0, workflow_id="order-7")
        fired = lambda: [e for e in handle.history() if e.type == "TimerFired"]  # noqa: E731
        wait_until(lambda: len(fired()) == 2, what="the backoff and the sleep")
        handle.signal("approve", "ops")
        assert handle.result(timeout=30) == "label for ch_70"
        wait_until(lambda: named(_spans(exporter), "RunWorkflow:order"), what="the run's span")
    provider.shutdown()
    return _spans(exporter)


def _spans(exporter: InMemorySpanExporter) -> list[Span]:
    return [Span.of(s) for s in exporter.get_finished_spans()]


def page(spans: list[Span]) -> str:
    bars, summary = as_timeline(spans, "order-7")
    begin = min(s.start_ns for s in spans)
    width = max(s.end_ns for s in spans) - begin or 1
    rows = []
    for depth, span in tree(spans):
        left = 100 * (span.start_ns - begin) / width
        size = max(100 * (span.end_ns - span.start_ns) / width, 0.3)
        lasted = (span.end_ns - span.start_ns) / 1e6
        cls = "out-failed" if span.status == "ERROR" else "out-completed"
        rows.append(
            f'<tr data-testid="span-row" class="{cls}"><td style="padding-left:{depth * 16 + 6}px">'
            f"{html.escape(span.name)}</td><td class='num'>{lasted:.1f} ms</td>"
            f'<td class="wf"><span class="bar" style="left:{left:.2f}%;width:{size:.2f}%">'
            "</span></td></tr>"
        )
    trace_id = spans[0].trace_id
    return f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/static/app.css"><title>trace {trace_id}</title>
<style>
 table.spans {{ width: 100%; border-collapse: collapse; font-size: 13px; }}
 table.spans td {{ padding: 2px 6px; border-bottom: 1px solid #eee; white-space: nowrap; }}
 td.num {{ text-align: right; width: 6em; color: #555; }}
 td.wf {{ position: relative; width: 55%; }}
 .bar {{ position: absolute; top: 5px; height: 10px; border-radius: 2px; background: #4a7bd0; }}
 tr.out-failed .bar {{ background: #c94a4a; }} tr.out-failed td:first-child {{ color: #b22; }}
</style></head><body><main class="page">
<section class="card"><div class="card-head"><h2>Trace {trace_id} &middot; {len(spans)} spans
&middot; workflow order-7</h2></div><div id="timeline"></div></section>
<section class="card"><div class="card-head"><h2>Spans</h2></div>
<table class="spans">{"".join(rows)}</table></section></main>
<script type="module">
import {{ Timeline }} from "/static/timeline.js";
const timeline = new Timeline();
document.getElementById("timeline").append(timeline.el);
timeline.update({json.dumps(bars)}, {json.dumps(summary)});
document.body.dataset.drawn = "yes";
</script></body></html>"""


def test_a_trace_drawn_as_the_dashboard_draws_a_workflow(make_app: Any, tmp_path: Path) -> None:
    executable = chromium()
    spans = traced_order(make_app)
    shutil.copytree(STATIC, tmp_path / "static")
    (tmp_path / "trace.html").write_text(page(spans))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(f"http://127.0.0.1:{server.server_port}/trace.html")
            tab.wait_for_selector("body[data-drawn=yes]")
            bars = tab.locator("[data-testid=timeline-bar]")
            failed = tab.locator("[data-testid=timeline-bar][data-outcome=failed]")
            assert failed.count() == 1  # the declined charge's attempt
            assert bars.locator("xpath=self::*[@data-kind='activity']").count() == 3
            assert (
                tab.locator("[data-testid=timeline-workflow]").get_attribute("data-status")
                == "completed"
            )
            assert tab.locator("[data-testid=span-row]").count() == len(spans)
            SHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SHOTS / "trace-timeline.png"), full_page=True)
            browser.close()
            assert errors == []
    finally:
        server.shutdown()
        server.server_close()
