"""Request latency of the example shop while NATS is up, refused, killed and hung.

    python bench/outage.py [--requests 40]

The Django shop of ``example_projects/django_shop`` runs under ``manage.py runserver`` (a real
web process) on a fresh SQLite database, with ``manage.py df_worker`` beside it, at default
settings (``CONNECT_TIMEOUT`` 5 s). Two views are timed, each request one after the other:
  - ``POST /``: saves an order and starts its workflow with ``start_on_commit`` (the outbox);
    timed to its redirect, which is not followed;
  - ``GET /orders/<id>/status.json``: reads the workflow's status through the client API.
The cases, all on loopback:
  - up: NATS running;
  - refused: a web process pointed at a port nothing listens on;
  - killed: NATS killed with SIGKILL under the running web process;
  - hung: a web process pointed at a listener that accepts connections and never answers;
  - frozen: NATS stopped with SIGSTOP under the running web process (a hung server that had
    answered before).
For each it prints p50, p90 and max in ms, and the web process's CPU ms per request; then
whether every order placed during the outages was started once NATS was back. The same run's
raw JetStream figure is the round trip of one acked publish from a plain nats-py client to the
same server, and each view's p50 is given as a ratio to it. This is a benchmark, not a test:
it prints figures and never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import nats

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "example_projects" / "django_shop"
sys.path.insert(0, str(ROOT))

from bench.burst import cpu_ms  # noqa: E402
from dfcore import EmbeddedServer  # noqa: E402
from dfcore.jetstream._server import free_port  # noqa: E402

ORDER = {"customer": "ada", "product": "book", "quantity": "1", "amount": "5.00"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 302 comes back as an HTTPError, timed without the next page


class Shop:
    """One web process of the shop, and a browser on it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.site = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, str(SHOP / "manage.py"), "runserver", "--noreload"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command, f"127.0.0.1:{self.port}"], env=env, stdout=out, stderr=out
            )
        jar = urllib.request.HTTPCookieProcessor(CookieJar())
        self._browser = urllib.request.build_opener(jar, _NoRedirect)
        self._token = ""
        deadline = time.monotonic() + 60
        while not self._up():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the web server did not start; see {log}")
            time.sleep(0.1)

    def _up(self) -> bool:
        try:
            with self._browser.open(self.site, timeout=5) as response:
                page = response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return False
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        self._token = found.group(1) if found else ""
        return True

    def order(self) -> str:
        """Place an order; the order page's path (from the redirect)."""
        form = urllib.parse.urlencode({**ORDER, "csrfmiddlewaretoken": self._token}).encode()
        try:
            self._browser.open(self.site, data=form, timeout=60)
        except urllib.error.HTTPError as redirect:
            if redirect.code == 302:
                return str(redirect.headers["Location"])
            raise
        raise AssertionError("the order form did not redirect")

    def status(self, path: str) -> dict[str, Any]:
        url = urllib.parse.urljoin(self.site, path + "status.json")
        with self._browser.open(url, timeout=60) as response:
            state: dict[str, Any] = json.load(response)
        return state

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def timed(call: Callable[[], Any], count: int, proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """Run ``call`` ``count`` times in a row: latency percentiles, web CPU per request."""
    times = []
    cpu = cpu_ms(proc.pid)
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50": statistics.median(times),
        "p90": times[int(len(times) * 0.9) - 1],
        "max": times[-1],
        "cpu": (cpu_ms(proc.pid) - cpu) / count,
    }


@contextmanager
def hung_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for connection in held:
            connection.close()


async def raw_round_trip(url: str, count: int = 200) -> float:
    """p50 ms of one acked JetStream publish at a time, from a plain nats-py client."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="OUTAGE_CEILING", subjects=["outage-ceiling.>"])
    times = []
    for i in range(count):
        start = time.perf_counter()
        await js.publish(f"outage-ceiling.{i}", b"x" * 200)
        times.append((time.perf_counter() - start) * 1000)
    await js.delete_stream("OUTAGE_CEILING")
    await nc.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per view and case")
    args = parser.parse_args()
    n = args.requests
    rows: list[tuple[str, str, dict[str, float]]] = []

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log = work / "processes.log"
        server = EmbeddedServer(work / "nats").start()
        env = {
            **os.environ,
            "SHOP_DB": str(work / "shop.sqlite3"),
            "SHOP_NAMESPACE": "outage",
            "DF_NATS_URL": server.url,
            "PYTHONPATH": str(SHOP),
        }
        subprocess.run(
            [sys.executable, str(SHOP / "manage.py"), "migrate", "-v", "0"], env=env, check=True
        )
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [sys.executable, str(SHOP / "manage.py"), "df_worker", "-l", "WARNING"],
                env=env,
                stdout=out,
                stderr=out,
            )
        raw = asyncio.run(raw_round_trip(server.url))
        shop = Shop(env, log)
        placed: list[str] = []

        def measure(case: str, site: Shop) -> None:
            rows.append((case, "POST / (start_on_commit)", timed(place(site), n, site.proc)))
            path = placed[-1]
            rows.append((case, "GET status.json", timed(lambda: site.status(path), n, site.proc)))

        def place(site: Shop) -> Callable[[], None]:
            return lambda: placed.append(site.order())

        measure("up", shop)

        refused = Shop({**env, "DF_NATS_URL": f"nats://127.0.0.1:{free_port()}"}, log)
        measure("refused", refused)
        refused.stop()

        server.kill()
        measure("killed", shop)
        server.start()

        with hung_listener() as port:
            hung = Shop({**env, "DF_NATS_URL": f"nats://127.0.0.1:{port}"}, log)
            measure("hung", hung)
            hung.stop()

        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        measure("frozen", shop)
        os.kill(server.pid, signal.SIGCONT)

        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline:
            done = sum(shop.status(path)["workflow"]["status"] == "completed" for path in placed)
            if done == len(placed):
                break
            time.sleep(0.5)

        shop.stop()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        server.stop()

    print(f"requests per view and case: {n}, one at a time; CONNECT_TIMEOUT 5 s (the default)")
    print(f"raw JetStream: one acked publish round trip, p50 {raw:.2f} ms")
    print(
        f"{'case':<8} {'view':<26} {'p50 ms':>8} {'p90 ms':>8} {'max ms':>8} "
        f"{'web CPU ms':>10} {'p50/raw':>8}"
    )
    for case, view, stats in rows:
        print(
            f"{case:<8} {view:<26} {stats['p50']:8.1f} {stats['p90']:8.1f} {stats['max']:8.1f} "
            f"{stats['cpu']:10.2f} {stats['p50'] / raw:8.1f}"
        )
    print(f"orders placed: {len(placed)}; started and completed once NATS was back: {done}")


if __name__ == "__main__":
    main()
