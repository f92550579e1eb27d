"""Client calls while NATS is down: a clear DFConnectionError within the connect timeout, then
fast failures while the outage lasts, and calls that work again once the server is back.

Every server here is on a loopback address: a real nats-server killed with SIGKILL, a port
nothing listens on, and a listener that accepts connections and never answers (a hung server).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import App, DFConnectionError, EmbeddedServer, WorkflowNotFoundError
from dfcore.jetstream._server import free_port
from tests.workerkit import wait_until


class HungServer:
    """A loopback listener that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            self.accepted.append(connection)

    def close(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def calls(app: App) -> dict[str, Callable[[], Any]]:
    """The client calls a view makes, each by name."""
    handle = app.get_handle("order-1")
    return {
        "start": lambda: app.start("fulfil", 1, workflow_id="order-1"),
        "signal": lambda: handle.signal("paid"),
        "status": handle.status,
        "cancel": handle.cancel,
        "list": app.list_workflows,
    }


def connected(app: App) -> bool:
    """Whether a call reaches the server (a missing workflow is an answer from it)."""
    try:
        app.get_handle("no-such-workflow").status()
    except WorkflowNotFoundError:
        return True
    except DFConnectionError:
        return False
    raise AssertionError("a missing workflow has a status")


def test_a_refused_port_fails_every_call_and_the_server_is_used_once_it_listens(
    make_app: Any, tmp_path: Path
) -> None:
    port = free_port()
    app = make_app(f"nats://127.0.0.1:{port}", connect_timeout=2)
    for name, call in calls(app).items():
        with pytest.raises(DFConnectionError, match=f"127.0.0.1:{port}") as info:
            call()
        assert "Start a server" in str(info.value), name
    # The client retries in the background: once a server listens there, calls work again.
    with EmbeddedServer(tmp_path / "nats", port=port):
        wait_until(lambda: connected(app), what="the client to connect")
        assert app.start("fulfil", 1, workflow_id="order-1").status().status == "running"


def test_a_hung_server_is_given_up_after_the_connect_timeout(
    make_app: Any, hung: HungServer
) -> None:
    app = make_app(f"nats://127.0.0.1:{hung.port}", connect_timeout=0.5)
    with pytest.raises(DFConnectionError, match=r"within 0\.5s \(the connect_timeout\)") as info:
        app.start("fulfil", 1, workflow_id="order-1")
    assert "with the same workflow_id is safe" in str(info.value)
    for call in calls(app).values():
        with pytest.raises(DFConnectionError, match=f"127.0.0.1:{hung.port}"):
            call()
    assert hung.accepted  # it was the listener that hung, not a refused port


def test_a_server_list_with_a_hung_server_connects_to_the_next(
    make_app: Any, hung: HungServer, nats_url: str
) -> None:
    """Each server of the list gets its share of the connect timeout."""
    app = make_app(f"nats://127.0.0.1:{hung.port},{nats_url}", connect_timeout=4)
    for _ in range(3):  # the list is shuffled: whichever comes first, the call connects
        assert connected(app)
        app.close()


def test_a_server_killed_under_a_running_client_fails_calls_until_it_is_back(
    make_app: Any, tmp_path: Path
) -> None:
    server = EmbeddedServer(tmp_path / "nats").start()
    try:
        app = make_app(server.url, connect_timeout=1)
        handle = app.start("fulfil", 1, workflow_id="order-1")  # no worker: it stays running
        server.kill()
        for call in calls(app).values():
            with pytest.raises(DFConnectionError, match=server.url.split("//")[1]):
                call()
        with pytest.raises(DFConnectionError, match=r"dropped .* ago and has not come back"):
            handle.status()  # the outage has lasted the connect timeout: it fails at once
        server.start()
        wait_until(lambda: connected(app), what="the client to reconnect")
        assert handle.status().status == "running"  # the start survived on disk
        handle.signal("paid")
        assert [event.type for event in handle.history()][-1] == "SignalReceived"
    finally:
        server.stop()


def test_a_frozen_server_fails_calls_at_once_after_the_first_until_it_answers(
    make_app: Any, tmp_path: Path
) -> None:
    """SIGSTOP: the connection stays open, and nothing comes back on it."""
    server = EmbeddedServer(tmp_path / "nats").start()
    assert server.pid is not None
    try:
        app = make_app(server.url, connect_timeout=1)
        handle = app.start("fulfil", 1, workflow_id="order-1")
        os.kill(server.pid, signal.SIGSTOP)
        pid = server.pid
        wait_until(lambda: _state(pid) == "T", what="the server to stop")  # kill() returns first
        try:
            with pytest.raises(DFConnectionError, match=r"no answer .* within 1.0s"):
                handle.status()
            for call in calls(app).values():
                with pytest.raises(DFConnectionError, match="is not answering"):
                    call()  # at once: the first call's timeout showed the server silent
        finally:
            os.kill(server.pid, signal.SIGCONT)
        wait_until(lambda: connected(app), what="the server to answer again")
        assert handle.status().status == "running"
    finally:
        server.stop()


def _state(pid: int) -> str:
    """The process state letter (``T``: stopped) from ``/proc``."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


_COMMIT_AND_EXIT = """
import contextlib, sys
from dfcore import App
from dfcore.outbox import OutboxRelay, OutboxRow

class Source:  # an outbox table of one row, in memory
    name, concurrent = "memory", True
    def __init__(self, rows): self.rows = rows
    @contextlib.contextmanager
    def claim(self, limit, *, keys=None, min_age=0.0): yield [r for r in self.rows if r.key in keys]
    def mark_published(self, keys): print("published", keys, flush=True)
    def mark_failed(self, key, error, retry_in): print("failed", key, error, flush=True)
    def take_lease(self, holder, ttl): return True
    def purge(self, before): return 0
    def release(self): pass

app = App("script", nats_url=sys.argv[1], namespace=sys.argv[2])
start = app.prepare_start("greet", "ada", workflow_id="greet-ada")
OutboxRelay(app, []).publish_committed(Source([OutboxRow(1, start)]), [1], ["greet-ada"])
"""


def test_a_script_that_commits_and_exits_at_once_still_publishes(
    nats_url: str, namespace: str, make_app: Any
) -> None:
    """The exit flush: the process waits for its publishing thread (which must not need a
    thread started at exit, which Python 3.12 forbids)."""
    done = subprocess.run(
        [sys.executable, "-c", _COMMIT_AND_EXIT, nats_url, namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "published [1]" in done.stdout, done.stdout + done.stderr
    assert make_app().get_handle("greet-ada").status().status == "running"
