"""Invariant 9 with real processes: the shop's web server answers while NATS is killed or hung,
and the orders placed meanwhile start once NATS is back (the worker's relay publishes them).

Processes: a nats-server of the test's own (killed with SIGKILL, frozen with SIGSTOP), the
example shop under ``manage.py runserver``, and ``manage.py df_worker``. All on loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from dfcore import App, EmbeddedServer
from dfcore.integrations.django.models import OutboxEntry
from dfcore.jetstream._server import free_port
from tests.django.conftest import django_process, manage_py
from tests.workerkit import starts_of, wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, seen by the processes

ORDER = {"customer": "ada", "product": "book", "quantity": "1", "amount": "5.00"}


class Shop:
    """A browser on the shop's site: place orders, read their status."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def up(self) -> bool:
        try:
            with self._browser.open(self.site, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def order(self) -> str:
        """Place an order through the form; the order page's URL (the redirect's target)."""
        with self._browser.open(self.site, timeout=30) as response:
            page = response.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        form = urllib.parse.urlencode({**ORDER, "csrfmiddlewaretoken": token.group(1)}).encode()
        with self._browser.open(self.site, data=form, timeout=30) as response:
            assert response.status == 200
            url = response.geturl()
        assert re.fullmatch(re.escape(self.site) + r"orders/\d+/", url), url
        return url

    def state(self, order_url: str) -> dict[str, Any]:
        with self._browser.open(order_url + "status.json", timeout=30) as response:
            state: dict[str, Any] = json.load(response)
        return state

    def completed(self, order_url: str) -> bool:
        return self.state(order_url)["workflow"]["status"] == "completed"


def test_orders_placed_while_nats_is_killed_or_hung_start_once_it_is_back(
    tmp_path: Path, namespace: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    server = EmbeddedServer(tmp_path / "nats").start()
    try:
        env = {"DF_NATS_URL": server.url, "DF_NAMESPACE": namespace, "DF_CONNECT_TIMEOUT": "1"}
        port = free_port()
        web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
        processes.append(
            django_process(
                *manage_py("runserver", "--noreload", f"127.0.0.1:{port}"), output=web_log, **env
            )
        )
        processes.append(django_process(*manage_py("df_worker"), output=worker_log, **env))
        shop = Shop(f"http://127.0.0.1:{port}/")
        wait_until(shop.up, timeout=60, what="the web server")

        first = shop.order()  # NATS up: the web process connects
        wait_until(lambda: shop.completed(first), timeout=60, what="the first order")

        server.kill()
        killed = shop.order()  # the view answers: the start waits in the outbox
        assert shop.state(killed)["workflow"]["status"] == "waiting"
        assert shop.state(first)["workflow"]["status"] == "unavailable"  # a message, not a 500

        server.start()  # the same port and store
        wait_until(lambda: shop.completed(killed), timeout=60, what="the order placed while down")

        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # hung: it holds connections and never answers
        try:
            hung = shop.order()
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_until(lambda: shop.completed(hung), timeout=60, what="the order placed while hung")

        # A publish given up while the server hung may have reached it all the same: its row is
        # retried, and the relay's second publish starts nothing new.
        def published() -> bool:
            return all(entry.status == "published" for entry in OutboxEntry.objects.all())

        wait_until(published, timeout=60, what="every row to be marked published")
        client = App("shop-test", nats_url=server.url, namespace=namespace)
        try:
            for entry in OutboxEntry.objects.all():
                assert starts_of(client, entry.workflow_id) == 1
        finally:
            client.close()
        assert OutboxEntry.objects.count() == 3
        assert "Traceback" not in web_log.read_text()
    finally:
        server.stop()
