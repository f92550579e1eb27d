"""Order-workflow throughput and latency, against the same run's raw JetStream ceiling.

    python bench/order_throughput.py [--workflows 2000] [--samples 200] [--steps 500]

Starts an embedded nats-server (file storage) and ONE worker process (`dfcore worker`), then
measures:
  1. throughput: N order workflows (2 activities each) started concurrently through the client;
  2. latency: p50/p99 of single workflows started one at a time (start -> result);
  3. per-step cost of a long workflow: mean step time at steps 1-50 vs the last 50 steps;
  4. the ceiling: pipelined acked JetStream publishes per second from one Python process.
This is a benchmark, not a test: it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js import api

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.order_app import app, long_steps, order  # noqa: E402
from dfcore import EmbeddedServer  # noqa: E402
from dfcore.core._history import DECIDED  # noqa: E402


async def throughput(n: int, in_flight: int) -> float:
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            handle = await order.astart(f"c{i}", "widget", 10.0, 1)
            await handle.aresult(timeout=120)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def latency(samples: int) -> tuple[float, float]:
    times = []
    for i in range(samples):
        start = time.perf_counter()
        handle = await order.astart(f"l{i}", "widget", 10.0, 1)
        await handle.aresult(timeout=60)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def step_cost(steps: int) -> tuple[float, float]:
    handle = await long_steps.astart(steps)
    await handle.aresult(timeout=600)
    store = await app.client.store()
    _, subject = await handle._locate()
    decisions = [r.ts for r in await store.load(subject) if r.type == DECIDED]
    gaps = [b - a for a, b in itertools.pairwise(decisions)]
    window = min(50, len(gaps) // 2)
    return statistics.mean(gaps[:window]), statistics.mean(gaps[-window:])


async def ceiling(url: str, n: int = 20000, window: int = 256) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="CEILING", subjects=["ceiling.>"]))
    payload = b"x" * 200
    start = time.perf_counter()
    pending: list[asyncio.Future[object]] = []
    for i in range(n):
        pending.append(await js.publish_async(f"ceiling.{i % 100}", payload))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    rate = n / (time.perf_counter() - start)
    await js.delete_stream("CEILING")
    await nc.close()
    return rate


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(tmp) as server:
        env = {**os.environ, "DF_NATS_URL": server.url, "DF_NAMESPACE": "bench"}
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dfcore",
                "worker",
                "-A",
                "bench.order_app:app",
                "-l",
                "WARNING",
                "-c",
                "256",
                "--workflow-concurrency",
                "512",
            ],
            cwd=ROOT,
            env=env,
        )
        app.configure(nats_url=server.url, namespace="bench")
        try:
            await throughput(50, 50)  # warm up: connections, streams, consumers
            rate = await throughput(args.workflows, args.in_flight)
            p50, p99 = await latency(args.samples)
            first, last = await step_cost(args.steps)
        finally:
            worker.terminate()
            worker.wait(60)
            await app.aclose()
        ceil = await ceiling(server.url)
    print(
        f"order workflows (2 activities), one worker process, file storage, {os.cpu_count()} cores"
    )
    print(
        f"  throughput:  {rate:8.0f} workflows/s   ({args.workflows} started concurrently, "
        f"{args.in_flight} in flight)"
    )
    print(
        f"  latency:     p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
        f"(one at a time, {args.samples} samples)"
    )
    print(
        f"  step cost:   steps 1-50 {first:5.2f} ms/step, "
        f"last 50 of {args.steps} {last:5.2f} ms/step "
        f"(x{last / first if first else float('nan'):.2f})"
    )
    print(f"  ceiling:     {ceil:8.0f} acked JetStream publishes/s from one Python process")
    print(
        f"  ratio:       {rate / ceil:.4f} workflows per ceiling publish "
        f"(~1/{ceil / rate:.0f}; an order workflow makes 9 acked appends/publishes)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
