"""What the dashboard tests share: a dashboard served in this process or as a real
``dfcore dashboard`` process, a small JSON client with the dashboard's auth, and Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dfcore import App
from dfcore.jetstream._server import free_port

from ..workerkit import ROOT, popen, wait_until

USER, PASSWORD, TOKEN = "ops", "s3cret-pass", "t0ken-for-scripts"
CHROMIUM = os.environ.get("DF_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("DF_SCREENSHOT_DIR", ROOT / ".df" / "screenshots"))


def chromium() -> str:
    """Chromium's path; skips without it, but fails under CI=true (.ci/run installs it)."""
    found = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        problem = f"no Chromium at {CHROMIUM} (apt-get install chromium; make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests need Chromium in CI: {problem}")
        pytest.skip(problem)
    return found


@dataclass
class Api:
    """The dashboard's JSON API over HTTP, as a script would call it."""

    base: str
    auth: str | None = None  # an Authorization header
    csrf: str | None = None
    origin: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        headers = dict(self.extra)
        if self.auth:
            headers["Authorization"] = self.auth
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if method == "POST":
            headers["Content-Type"] = content_type
            if self.csrf:
                headers["X-CSRF-Token"] = self.csrf
            if self.origin:
                headers["Origin"] = self.origin
            data = data if data is not None else b"{}"
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _decoded(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read())

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **options)

    def logged_in(self) -> Api:
        """This client with the CSRF token a browser page would read from /api/session."""
        status, session = self.get("/api/session")
        assert status == 200, session
        return Api(self.base, self.auth, session["csrf_token"], self.origin, self.extra)


def _decoded(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def wait_loaded(api: Api) -> None:
    """Until the dashboard has read the whole index."""
    wait_until(lambda: api.get("/api/session")[1].get("loaded") is True, what="the index loaded")


@contextmanager
def served(app: App, **settings: Any) -> Iterator[Api]:
    """The dashboard of ``app`` served on a thread of this process (its own loop), with basic
    auth unless ``settings`` say otherwise; yields a client with credentials and CSRF token."""
    from dfcore.contrib.dashboard import DashboardSettings, serve

    options = {"user": USER, "password": PASSWORD, "port": free_port(), **settings}
    dash = DashboardSettings(**options)
    urls: list[str] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        def started(url: str) -> None:
            urls.append(url)
            ready.set()

        async def main() -> None:
            try:
                await serve(app, dash, started=started, stop=stop)
            finally:
                await app.aclose()

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the dashboard did not start"
    auth = {"basic": basic(), "token": f"Bearer {TOKEN}"}.get(dash.mode)
    api = Api(urls[0].rstrip("/"), auth)
    wait_loaded(api)
    try:
        yield api.logged_in() if dash.mode != "token" else api
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@contextmanager
def dashboard_process(nats_url: str, namespace: str, *args: str, log: Path) -> Iterator[Api]:
    """``dfcore -A tests.apps.dashboard_shop:app dashboard`` as a real process, basic auth."""
    port = free_port()
    env = {
        **os.environ,
        "DF_NATS_URL": nats_url,
        "DF_NAMESPACE": namespace,
        "DF_DASHBOARD_USER": USER,
        "DF_DASHBOARD_PASSWORD": PASSWORD,
    }
    command = [
        sys.executable,
        "-m",
        "dfcore",
        "-A",
        "tests.apps.dashboard_shop:app",
        "dashboard",
        "--port",
        str(port),
        *args,
    ]
    proc = popen(command, env, log)
    api = Api(f"http://127.0.0.1:{port}", basic())
    try:
        wait_until(lambda: _answers(api) or proc.poll() is not None, what="the dashboard")
        assert proc.poll() is None, log.read_text()
        wait_loaded(api)
        yield api.logged_in()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(api: Api) -> bool:
    try:
        return api.get("/api/session")[0] == 200
    except OSError:
        return False
