"""Bursts and scale-out: N order workflows fired at once, then awaited, on K worker processes.

    python bench/burst.py [--workers 1,2,3] [--bursts 500,2000,8000] [--latency-samples 200]
                          [--observe otel|prometheus [--sample RATIO]]

The method a Celery user benchmarks with, at default settings: for every (K, N) cell a fresh
embedded nats-server (file storage) and K ``dfcore worker`` processes (``--processes K``) are
started; the client then starts N order workflows at once with ``astart`` and awaits every
result. For each cell it prints:
  - workflows/s (first start sent -> last result received) and p50/p99 start-to-result latency;
  - CPU ms per workflow of the workers (all K together), the nats-server and this client,
    read from /proc (CPU time is far steadier than wall time on a shared machine);
  - the same run's raw JetStream ceiling: pipelined acked publishes/s from one Python process,
    on the same server, and the ratio of workflows/s to it.
After the cells it measures single-workflow latency (one at a time) and the cost of step 500 of
a long workflow against step 1, on one worker process.
``--observe`` turns tracing and metrics on in the client and the workers: OpenTelemetry's SDK
with spans exported to nowhere (bench/observed.py), and the metrics through OpenTelemetry
(``otel``) or each worker's Prometheus endpoint (``prometheus``, ``--metrics-port``).
This is a benchmark, not a test: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.order_app import app, order  # noqa: E402
from bench.order_throughput import ceiling, latency, step_cost  # noqa: E402
from dfcore import EmbeddedServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
LOGLEVEL = "INFO"  # the worker command's default: a line per workflow and activity attempt


def cpu_ms(pid: int) -> float:
    """User + system CPU of one process (all its threads), in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def tree_cpu_ms(pid: int) -> float:
    """CPU of a process and its live children (a ``--processes`` supervisor and its workers)."""
    return cpu_ms(pid) + sum(cpu_ms(c) for c in children(pid))


@dataclass
class Cell:
    workers: int
    burst: int
    rate: float
    p50: float
    p99: float
    worker_ms: float
    server_ms: float
    client_ms: float
    ceiling: float


class Workers:
    """K worker processes at default settings, as a user starts them.

    ``supervised``: one ``dfcore worker --processes K`` (the supervisor's children are measured);
    otherwise K separate ``dfcore worker`` commands.
    """

    def __init__(self, url: str, processes: int, *, supervised: bool, log: Path) -> None:
        env = {**os.environ, "DF_NATS_URL": url, "DF_NAMESPACE": "bench"}
        command = [sys.executable, "-m", "dfcore", "worker", "-A", "bench.order_app:app"]
        command += ["-l", LOGLEVEL]
        if os.environ.get("DF_BENCH_OBSERVE") == "prometheus":
            command += ["--metrics-port", "0"]
        supervised = supervised and processes > 1  # --processes 1 runs the worker itself
        with log.open("ab") as out:  # as a service manager keeps a worker's output
            if supervised:
                command += ["--processes", str(processes)]
                self.procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)]
            else:
                self.procs = [
                    subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
                    for _ in range(processes)
                ]
        self.supervised = supervised
        self.processes = processes

    def pids(self) -> list[int]:
        """The processes that do the work."""
        if self.supervised:
            return children(self.procs[0].pid)
        return [p.pid for p in self.procs]

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until every worker process is pulling activity tasks."""
        store = await app.client.store()
        deadline = time.monotonic() + timeout
        lay = store.layout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}")
            try:
                info = await store.js.consumer_info(
                    lay.tasks_stream, lay.activity_consumer("default")
                )
            except Exception:
                info = None
            waiting = (info.num_waiting or 0) if info is not None else 0
            if len(self.pids()) >= self.processes and waiting >= self.processes:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the worker processes did not start pulling within {timeout} s")

    def cpu_ms(self) -> float:
        return sum(tree_cpu_ms(p.pid) for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def burst(n: int, tag: str) -> tuple[float, list[float]]:
    """Start ``n`` order workflows at once, then await every result."""
    loop = asyncio.get_running_loop()
    begin = loop.time()
    starts = [
        order.astart(f"{tag}-{i}", "widget", 10.0, 1, workflow_id=f"{tag}-{i}") for i in range(n)
    ]
    handles = await asyncio.gather(*starts)
    latencies: list[float] = []

    async def wait(handle: object) -> None:
        await handle.aresult(timeout=600)  # type: ignore[attr-defined]
        latencies.append((loop.time() - begin) * 1000)

    await asyncio.gather(*(wait(h) for h in handles))
    return n / (loop.time() - begin), latencies


async def run_cell(k: int, n: int, supervised: bool) -> Cell:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp) as server:
        app.configure(nats_url=server.url, namespace="bench")
        workers = Workers(server.url, k, supervised=supervised, log=Path(tmp) / "workers.log")
        try:
            await workers.ready()
            await burst(20, "warm")  # connections, streams and consumers in place
            w0, s0, c0 = workers.cpu_ms(), cpu_ms(server.pid), time.process_time() * 1000
            rate, lat = await burst(n, "b")
            w1, s1, c1 = workers.cpu_ms(), cpu_ms(server.pid), time.process_time() * 1000
        finally:
            workers.stop()
            await app.aclose()
        ceil = await ceiling(server.url)
    lat.sort()
    return Cell(
        workers=k,
        burst=n,
        rate=rate,
        p50=statistics.median(lat),
        p99=lat[max(0, int(len(lat) * 0.99) - 1)],
        worker_ms=(w1 - w0) / n,
        server_ms=(s1 - s0) / n,
        client_ms=(c1 - c0) / n,
        ceiling=ceil,
    )


async def single(samples: int, steps: int, supervised: bool) -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp) as server:
        app.configure(nats_url=server.url, namespace="bench")
        workers = Workers(server.url, 1, supervised=supervised, log=Path(tmp) / "workers.log")
        try:
            await workers.ready()
            await burst(20, "warm")
            p50, p99 = await latency(samples)
            first, last = await step_cost(steps)
        finally:
            workers.stop()
            await app.aclose()
    return p50, p99, first, last


def print_cells(cells: list[Cell]) -> None:
    print(f"order workflows (2 activities), default settings, file storage, {os.cpu_count()} cores")
    print(
        "N started at once with astart, then every result awaited; CPU ms per workflow; "
        f"workers at -l {LOGLEVEL}, their output to a file"
    )
    print(
        f"{'K':>2} {'burst':>6} {'wf/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'worker':>7} {'server':>7} {'client':>7} {'ceiling/s':>10} {'ratio':>7}"
    )
    for c in cells:
        print(
            f"{c.workers:>2} {c.burst:>6} {c.rate:>7.0f} {c.p50:>8.0f} {c.p99:>8.0f} "
            f"{c.worker_ms:>7.2f} {c.server_ms:>7.2f} {c.client_ms:>7.2f} "
            f"{c.ceiling:>10.0f} {c.rate / c.ceiling:>7.4f}"
        )
    print("ratio = workflows/s divided by the same cell's ceiling of acked publishes/s")


async def main(args: argparse.Namespace) -> None:
    cells = []
    for k in args.workers:
        for n in args.bursts:
            cell = await run_cell(k, n, not args.separate)
            cells.append(cell)
            if args.verbose:
                print_cells([cell])
    print_cells(cells)
    if args.latency_samples:
        p50, p99, first, last = await single(args.latency_samples, args.steps, not args.separate)
        print(
            f"single workflow, one at a time: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"({args.latency_samples} samples, 1 worker process)"
        )
        print(
            f"long workflow: steps 1-50 {first:.2f} ms/step, last 50 of {args.steps} "
            f"{last:.2f} ms/step (x{last / first if first else float('nan'):.2f})"
        )


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int_list, default=[1, 2, 3])
    parser.add_argument("--bursts", type=int_list, default=[500, 2000, 8000])
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument(
        "--separate",
        action="store_true",
        help="K separate `dfcore worker` commands, no --processes",
    )
    parser.add_argument("--verbose", action="store_true", help="print each cell as it ends")
    parser.add_argument(
        "--loglevel", default="INFO", help="the workers' -l (INFO, their default; WARNING: quiet)"
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="with --observe: the share of traces sampled (tuned; default all)",
    )
    parser.add_argument(
        "--observe",
        choices=["otel", "prometheus"],
        help="tracing on, and metrics through OpenTelemetry or Prometheus (bench/observed.py)",
    )
    arguments = parser.parse_args()
    if arguments.observe:  # the workers' app instruments itself (bench/order_app.py)
        os.environ["DF_BENCH_OBSERVE"] = arguments.observe
        os.environ["DF_BENCH_SAMPLE"] = str(arguments.sample)
        from bench.observed import observe

        observe(app, arguments.observe)
    LOGLEVEL = arguments.loglevel
    asyncio.run(main(arguments))
