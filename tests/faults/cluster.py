"""A three-node JetStream cluster on loopback, for fault tests.

Each node is an :class:`~dfcore.jetstream._server.EmbeddedServer` with its own store and a
config that names it and routes it to the other two. Client ports are picked by the servers
themselves and kept across restarts; route ports are picked up front (every config must name
its peers').

Example::

    with LocalCluster(tmp_path / "cluster") as cluster:
        app = App("shop", nats_url=cluster.urls, stream_replicas=3)
        cluster.kill(cluster.stream_leader("DF_shop_HISTORY"))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import nats
import orjson

from dfcore.jetstream._server import EmbeddedServer, free_port

CLUSTER_NAME = "df-test"
_PROBE_STREAM = "LOCALCLUSTER_PROBE"
_POLL = 0.1  # seconds between probes while waiting for a state; each wait has a deadline

T = TypeVar("T")
Ask = Callable[[Any], Awaitable[Any]]


class ClusterError(AssertionError):
    """The cluster did not reach the state a test waits for."""


class LocalCluster:
    """Three clustered nats-server processes with JetStream, each with its own store.

    Args:
        root: folder for the nodes' stores (``<root>/<node>``) and logs (``<root>/<node>.log``).
        names: the nodes' server names.
    """

    def __init__(self, root: Path, names: tuple[str, ...] = ("n1", "n2", "n3")) -> None:
        self.root = root
        self.names = names
        routes = {name: free_port() for name in names}
        self.servers = {
            name: EmbeddedServer(
                root / name,
                log_file=str(root / f"{name}.log"),
                config_text=_config(name, routes),
            )
            for name in names
        }

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start every node, then wait until JetStream has a meta leader and takes R3 streams."""
        for server in self.servers.values():
            server.start()
        self.wait_ready(timeout)
        return self

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (for DF_NATS_URL / ``nats_url``)."""
        return ",".join(server.url for server in self.servers.values())

    def live(self) -> list[str]:
        """The names of the nodes whose process is running."""
        return [name for name, server in self.servers.items() if server.running]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until a stream with a replica on every node can be created.

        That needs a JetStream meta leader and every peer known to it.
        """
        config = {
            "name": _PROBE_STREAM,
            "subjects": [_PROBE_STREAM],
            "num_replicas": len(self.names),
        }
        create = f"$JS.API.STREAM.CREATE.{_PROBE_STREAM}"
        self._wait(lambda: self._api_ok(create, orjson.dumps(config)), timeout, "a meta leader")
        self._api(f"$JS.API.STREAM.DELETE.{_PROBE_STREAM}")

    def stream_info(self, stream: str) -> dict[str, Any]:
        """The JetStream API's STREAM.INFO answer for ``stream`` (raises on an API error)."""
        info = self._api(f"$JS.API.STREAM.INFO.{stream}")
        if "error" in info:
            raise ClusterError(f"STREAM.INFO {stream}: {info['error']}")
        return info

    def stream_leader(self, stream: str, timeout: float = 30.0) -> str:
        """The node leading ``stream`` now (waits through an election, up to ``timeout``)."""
        return self._wait(lambda: self._leader(f"STREAM.INFO.{stream}"), timeout, stream)

    def consumer_leader(self, stream: str, consumer: str, timeout: float = 30.0) -> str:
        """The node leading the consumer ``consumer`` of ``stream`` now."""
        what = f"CONSUMER.INFO.{stream}.{consumer}"
        return self._wait(lambda: self._leader(what), timeout, what)

    def move_leader(
        self, node: str, stream: str, consumer: str | None = None, timeout: float = 30.0
    ) -> None:
        """Make ``node`` lead ``stream`` (or its ``consumer``, once it exists) by step-downs."""
        kind = f"CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}" if consumer else ""
        kind = kind or f"STREAM.LEADER.STEPDOWN.{stream}"
        ask = f"CONSUMER.INFO.{stream}.{consumer}" if consumer else f"STREAM.INFO.{stream}"
        body = orjson.dumps({"placement": {"preferred": node}})

        def moved() -> bool:
            leader = self._leader(ask)
            if leader is None or leader == node:
                return leader == node  # None: not created yet, or electing
            with contextlib.suppress(Exception):  # the answer may come after the election
                self._api(f"$JS.API.{kind}", body)
            return False

        self._wait(moved, timeout, f"{node} leading {ask}")

    def wait_current(self, stream: str, timeout: float = 30.0) -> None:
        """Block until ``stream`` has a leader and every replica is current (caught up)."""

        def current() -> bool:
            try:
                cluster = self.stream_info(stream).get("cluster", {})
            except Exception:
                return False
            replicas = cluster.get("replicas", [])
            if cluster.get("leader") not in self.servers or len(replicas) < len(self.names) - 1:
                return False
            return all(replica.get("current") for replica in replicas)

        self._wait(current, timeout, f"every replica of {stream} current")

    def kill(self, node: str) -> None:
        """SIGKILL one node, as a crash would."""
        self.servers[node].kill()

    def restart(self, node: str) -> None:
        """Start a killed node again on its port and store (it then catches up by itself)."""
        self.servers[node].start()

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL)."""
        for server in self.servers.values():
            server.stop()

    def logs(self, lines: int = 20) -> str:
        """The last warnings and errors of every node's log, for failure messages."""
        parts = []
        for name in self.names:
            path = self.root / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            problems = [line for line in text.splitlines() if "[WRN]" in line or "[ERR]" in line]
            parts.append(f"--- {name}.log\n" + "\n".join(problems[-lines:]))
        return "\n".join(parts)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- talking to the JetStream API ---------------------------------------------------------

    def _wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """Call ``probe()`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"cluster: timed out after {timeout:g} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(_POLL)

    def _leader(self, what: str) -> str | None:
        """The leader named in an INFO answer, or None during an election or outage."""
        try:
            info = self._api(f"$JS.API.{what}", timeout=1.0)
        except Exception:
            return None
        leader = info.get("cluster", {}).get("leader")
        return leader if leader in self.servers else None

    def _api(self, subject: str, body: bytes = b"", timeout: float = 5.0) -> dict[str, Any]:
        async def ask(nc: Any) -> Any:
            return await nc.request(subject, body, timeout=timeout)

        return dict(orjson.loads(self._call(ask).data))

    def _api_ok(self, subject: str, body: bytes) -> bool:
        try:
            return "error" not in self._api(subject, body)
        except Exception:
            return False

    def _call(self, ask: Ask) -> Any:
        """Run ``await ask(nc)`` on a short-lived connection to the nodes that are up."""
        urls = [self.servers[name].url for name in self.live()]

        async def main() -> Any:
            nc = await nats.connect(servers=urls, connect_timeout=2, allow_reconnect=False)
            try:
                return await ask(nc)
            finally:
                await nc.close()

        return asyncio.run(main())


def _config(name: str, routes: dict[str, int]) -> str:
    """A node's config: its name, and a cluster block routing to every other node."""
    peers = ", ".join(
        f"nats-route://127.0.0.1:{port}" for peer, port in routes.items() if peer != name
    )
    return (
        f"server_name: {name}\n"
        "cluster {\n"
        f"  name: {CLUSTER_NAME}\n"
        f"  listen: 127.0.0.1:{routes[name]}\n"
        f"  routes: [{peers}]\n"
        "}\n"
    )
