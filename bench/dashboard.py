"""The dashboard with many finished workflows in the store.

    python bench/dashboard.py [--workflows 100000] [--samples 20]

A fresh embedded nats-server and two ``dfcore worker`` processes at default settings; N
workflows (one step each, so filling the store takes minutes, not hours) are started in
waves and run to the end. Then a ``dfcore dashboard`` process is started, and it prints:
  - how long the dashboard takes to load the index (and at what rate, beside the same run's
    raw-JetStream ceiling of acked publishes/s, and the ratio);
  - the time to serve the first list page, a filtered page, the 20th page and a workflow page
    (p50 and p99 of --samples requests each, over HTTP, as a browser asks);
  - the live update delay: from a signal's send to the ``update`` event on the workflow's
    event stream, and from a start to the ``workflow`` event on the list's stream;
  - the CPU the dashboard process used to load, and its resident memory.
This is a benchmark, not a test: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.burst import cpu_ms  # noqa: E402
from bench.order_throughput import ceiling  # noqa: E402
from dfcore import App, EmbeddedServer  # noqa: E402
from dfcore.jetstream._server import free_port  # noqa: E402

APP = "bench.dashboard_app:app"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, EmbeddedServer(Path(data)) as server:
        env = {**os.environ, "DF_NATS_URL": server.url, "DF_NAMESPACE": "bench"}
        workers = subprocess.Popen(
            [sys.executable, "-m", "dfcore", "-A", APP, "worker", "--processes", "2"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            app = App("bench", nats_url=server.url, namespace="bench")
            fill(app, args.workflows)
            limit = asyncio.run(ceiling(server.url))
            run_dashboard(env, app, args.samples, args.workflows, limit)
        finally:
            workers.terminate()
            workers.wait(30)


def fill(app: App, count: int) -> None:
    began = time.perf_counter()

    async def go() -> None:
        wave = 2000
        for first in range(0, count, wave):
            handles = await asyncio.gather(
                *(
                    app.astart("noop", n, workflow_id=f"bench-{n}")
                    for n in range(first, min(first + wave, count))
                )
            )
            await asyncio.gather(*(h.aresult(timeout=600) for h in handles))
        await app.aclose()

    asyncio.run(go())
    took = time.perf_counter() - began
    print(f"filled the store: {count} finished workflows in {took:.0f} s ({count / took:.0f}/s)")


def run_dashboard(env: dict[str, str], app: App, samples: int, count: int, limit: float) -> None:
    port = free_port()
    env = {**env, "DF_DASHBOARD_TOKEN": "bench"}
    began = time.perf_counter()
    dash = subprocess.Popen(
        [sys.executable, "-m", "dfcore", "-A", APP, "dashboard", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while not _loaded(base):
            time.sleep(0.05)
        load = time.perf_counter() - began
        rate = count / load
        print(
            f"dashboard loaded {count} entries in {load:.2f} s ({rate:.0f}/s; "
            f"ceiling {limit:.0f} acked publishes/s, ratio {rate / limit:.3f}); "
            f"its CPU {cpu_ms(dash.pid) / 1000:.2f} s, RSS {_rss_mb(dash.pid):.0f} MB"
        )
        page = get(base, "/api/workflows?limit=50")
        cursor = page["next_cursor"]
        for _ in range(18):
            cursor = get(base, f"/api/workflows?limit=50&cursor={cursor}")["next_cursor"]
        for label, path in (
            ("first list page", "/api/workflows?limit=50"),
            (
                "filtered page",
                "/api/workflows?limit=50&status=completed&id_prefix=bench-7&type=noop",
            ),
            ("20th list page", f"/api/workflows?limit=50&cursor={cursor}"),
            ("workflow page", f"/api/workflows/bench-{count // 2}"),
        ):
            times = [_timed(base, path) for _ in range(samples)]
            print(f"{label:16} p50 {_p(times, 50):7.2f} ms  p99 {_p(times, 99):7.2f} ms")
        live_delays(base, app, samples)
    finally:
        dash.terminate()
        dash.wait(30)


def live_delays(base: str, app: App, samples: int) -> None:
    history, listed = [], []
    for n in range(samples):
        handle = app.start("waits", workflow_id=f"live-{n}")
        stream = _Stream(base, f"/api/workflows/live-{n}/stream")
        stream.next_event()  # the first update: the history so far
        sent = time.perf_counter()
        handle.signal("go")
        while "SignalReceived" not in stream.next_event():
            pass
        history.append((time.perf_counter() - sent) * 1000)
        stream.close()
        feed = _Stream(base, "/api/stream")
        for _ in range(3):
            feed.next_event()  # counts, workers, queues
        sent = time.perf_counter()
        app.start("noop", -1, workflow_id=f"listed-{n}")
        while f'"listed-{n}"' not in feed.next_event():
            pass
        listed.append((time.perf_counter() - sent) * 1000)
        feed.close()
    app.close()
    print(
        f"live: signal -> workflow page event  p50 {_p(history, 50):.1f} ms  "
        f"p99 {_p(history, 99):.1f} ms"
    )
    print(
        f"live: start -> list event            p50 {_p(listed, 50):.1f} ms  "
        f"p99 {_p(listed, 99):.1f} ms"
    )


class _Stream:
    """A server-sent events stream read event by event."""

    def __init__(self, base: str, path: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self._conn.request("GET", path, headers={"Authorization": "Bearer bench"})
        self._response = self._conn.getresponse()

    def next_event(self) -> str:
        lines = []
        while True:
            line = self._response.readline().decode()
            if line in ("\n", "") and lines:
                return "".join(lines)
            if line.strip() and not line.startswith(":"):
                lines.append(line)

    def close(self) -> None:
        self._conn.close()


def get(base: str, path: str) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer bench"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _timed(base: str, path: str) -> float:
    began = time.perf_counter()
    get(base, path)
    return (time.perf_counter() - began) * 1000


def _loaded(base: str) -> bool:
    try:
        return bool(get(base, "/api/session").get("loaded"))
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _p(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


if __name__ == "__main__":
    main()
