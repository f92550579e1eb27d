"""Celery's two paths against each other: the order chain on Celery + Redis, on Celery +
``dfnats://``, on the Celery facade, and on the native API, in one run.

    python bench/celery_peers.py [--jobs 1000] [--skip redis]

The workload is the order: a chain of two tasks (charge, then ship with the charge), as
``bench/celery_order.py`` writes it; the native run is ``bench/order_app.py``'s workflow of the
same two activities. For each setup, at default settings and with one worker process as a user
starts it (``celery -A ... worker``, ``dfcore worker``): a fresh embedded nats-server (file
storage) and, for Redis, the local redis-server (databases 14 and 15, flushed). N chains are
fired at once and then awaited. It prints jobs/s, and CPU ms per job of the worker (with its
pool's children), the server (nats-server or redis-server) and this client; then the same
run's raw JetStream ceiling (pipelined acked publishes/s) and each setup's ratio to it.
This is a benchmark, not a test: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.burst import cpu_ms, tree_cpu_ms  # noqa: E402
from bench.order_throughput import ceiling  # noqa: E402
from dfcore import EmbeddedServer  # noqa: E402
from dfcore.contrib.kombu._bridge import bridge  # noqa: E402

REDIS = "redis://127.0.0.1:6379"


@dataclass
class Row:
    setup: str
    rate: float
    worker_ms: float
    server_ms: float
    client_ms: float


def redis_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    pids = out.stdout.split()
    return int(pids[0]) if pids else None


def fire_and_wait(n: int, start: Callable[[int], Any]) -> float:
    """Start ``n`` jobs at once, then wait for every result; jobs/s."""
    begin = time.perf_counter()
    results = [start(i) for i in range(n)]
    for result in results:
        result.get(timeout=600)
    return n / (time.perf_counter() - begin)


def run_setup(name: str, env: dict[str, str], worker: list[str], server_pid: int, n: int) -> Row:
    """One setup: its worker process, a warm-up, then N jobs, measured."""
    environ = {**os.environ, **env}
    os.environ.update(env)
    sys.modules.pop("bench.celery_order", None)  # imported again, under this setup's env
    celery_order = importlib.import_module("bench.celery_order")

    if name == "native":
        from bench.order_app import app, order

        app.configure(nats_url=env["DF_NATS_URL"], namespace=env["DF_NAMESPACE"])

        def start(i: int) -> Any:
            handle = order.start(
                f"c{i}", "widget", 10.0, 1, workflow_id=f"{name}-{i}-{time.time()}"
            )
            return _HandleResult(handle)
    else:
        chain = _chain_of(name)

        def start(i: int) -> Any:
            charge = celery_order.charge_credit_card.s(f"c{i}", 10.0)
            return chain(charge, celery_order.ship_package.s(1)).apply_async()

    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(worker, cwd=ROOT, env=environ, stdout=log, stderr=log)
        try:
            fire_and_wait(20, start)  # the worker is up, queues and streams are in place
            w0, s0, c0 = tree_cpu_ms(proc.pid), cpu_ms(server_pid), time.process_time() * 1000
            rate = fire_and_wait(n, start)
            w1, s1, c1 = tree_cpu_ms(proc.pid), cpu_ms(server_pid), time.process_time() * 1000
        finally:
            proc.terminate()
            proc.wait(60)
    if name == "native":
        from dfcore.client._loopthread import run_sync

        run_sync(app.aclose())
    else:
        celery_order.app.close()
    return Row(name, rate, (w1 - w0) / n, (s1 - s0) / n, (c1 - c0) / n)


class _HandleResult:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def get(self, timeout: float) -> Any:
        return self.handle.result(timeout=timeout)


def _chain_of(setup: str) -> Any:
    if setup == "facade":
        from dfcore.contrib.celery import chain
    else:
        from celery import chain
    return chain


def main(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp) as server:
        dfnats = server.url.replace("nats://", "dfnats://", 1)
        celery_worker = [sys.executable, "-m", "celery", "-A", "bench.celery_order", "worker"]
        dfcore_worker = [sys.executable, "-m", "dfcore", "worker", "-A"]
        setups: list[tuple[str, dict[str, str], list[str], int | None]] = [
            (
                "celery+dfnats",
                {"BENCH_BROKER": dfnats, "BENCH_BACKEND": dfnats},
                celery_worker,
                server.pid,
            ),
            (
                "celery+redis",
                {"BENCH_BROKER": f"{REDIS}/14", "BENCH_BACKEND": f"{REDIS}/15"},
                celery_worker,
                redis_pid(),
            ),
            (
                "facade",
                {"BENCH_CELERY": "facade", "DF_NATS_URL": server.url, "DF_NAMESPACE": "facade"},
                [*dfcore_worker, "bench.celery_order:app"],
                server.pid,
            ),
            (
                "native",
                {"DF_NATS_URL": server.url, "DF_NAMESPACE": "native"},
                [*dfcore_worker, "bench.order_app:app"],
                server.pid,
            ),
        ]
        for name, env, worker, pid in setups:
            if name in args.skip:
                continue
            if pid is None:
                print(f"{name}: skipped (no redis-server running)")
                continue
            if name == "celery+redis":
                import redis

                for db in (14, 15):
                    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
            rows.append(run_setup(name, env, worker, pid, args.jobs))
            print(f"{name}: done", flush=True)
        ceil = asyncio.run(ceiling(server.url))
        bridge.close()  # the transport's connections, before their server stops
    print(f"\norder chain (2 tasks), {args.jobs} fired at once then awaited, 1 worker process")
    print(
        f"{'setup':<15}{'jobs/s':>9}{'worker ms':>11}{'server ms':>11}{'client ms':>11}{'ratio':>8}"
    )
    for row in rows:
        print(
            f"{row.setup:<15}{row.rate:>9.0f}{row.worker_ms:>11.2f}{row.server_ms:>11.2f}"
            f"{row.client_ms:>11.2f}{row.rate / ceil:>8.3f}"
        )
    print(f"raw JetStream ceiling, same server: {ceil:.0f} acked publishes/s")
    print("CPU ms are per job; 'server' is the nats-server, or redis-server for celery+redis")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--skip", action="append", default=[], help="a setup to leave out")
    main(parser.parse_args())
