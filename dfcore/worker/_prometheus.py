"""A worker's Prometheus endpoint: the engine's metrics kept in memory
(:class:`MetricsRegistry`) and served in Prometheus' text format on ``GET /metrics`` by a small
asyncio HTTP server.

Each worker process serves its own figures (with ``-P N``, process k serves on the port plus
k); Prometheus adds them up across processes, as it does for any multi-process job.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dfcore.core._errors import ConfigurationError
from dfcore.worker._metrics import METRIC, METRICS, Labels

log = logging.getLogger("dfcore.worker")

# Seconds: a workflow task takes milliseconds, a workflow may take an hour or more.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MAX_REQUEST = 8192  # bytes of request line and headers read before the request is refused
_READ_TIMEOUT = 10.0  # seconds a client may take to send its request

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0


class MetricsRegistry:
    """A :class:`dfcore.MetricSink` that keeps every series in memory and renders them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, dict[LabelKey, _Histogram]] = {}
        self._gauges: dict[str, dict[LabelKey, float]] = {}

    def count(self, name: str, labels: Labels) -> None:
        key = _key(labels)
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + 1

    def observe(self, name: str, labels: Labels, seconds: float) -> None:
        key = _key(labels)
        with self._lock:
            histogram = self._histograms.setdefault(name, {}).setdefault(key, _Histogram())
            histogram.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            histogram.total += seconds

    def gauge(self, name: str, labels: Labels, value: float) -> None:
        with self._lock:
            self._gauges.setdefault(name, {})[_key(labels)] = value

    def render(self) -> str:
        """Every series in Prometheus' text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for metric in METRICS:
                lines.append(f"# HELP {_name(metric.name)} {metric.help}")
                lines.append(f"# TYPE {_name(metric.name)} {metric.kind}")
                if metric.kind == "counter":
                    for key, value in sorted(self._counters.get(metric.name, {}).items()):
                        lines.append(f"{_name(metric.name)}{_labels(key)} {_number(value)}")
                elif metric.kind == "gauge":
                    for key, value in sorted(self._gauges.get(metric.name, {}).items()):
                        lines.append(f"{_name(metric.name)}{_labels(key)} {_number(value)}")
                else:
                    for key, histogram in sorted(self._histograms.get(metric.name, {}).items()):
                        lines.extend(_histogram_lines(metric.name, key, histogram))
        return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    return f"{name}_total" if METRIC[name].kind == "counter" else name


def _histogram_lines(name: str, key: LabelKey, histogram: _Histogram) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*BUCKETS, math.inf), histogram.counts):
        running += count
        le = "+Inf" if bound == math.inf else _number(bound)
        lines.append(f"{name}_bucket{_labels((*key, ('le', le)))} {running}")
    lines.append(f"{name}_sum{_labels(key)} {_number(histogram.total)}")
    lines.append(f"{name}_count{_labels(key)} {running}")
    return lines


def _key(labels: Labels) -> LabelKey:
    return tuple(sorted(labels.items()))


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in key) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class MetricsServer:
    """Serves ``GET /metrics`` from ``registry``, calling ``refresh`` first (the gauges)."""

    def __init__(
        self,
        registry: MetricsRegistry,
        refresh: Callable[[], Awaitable[None]],
        host: str,
        port: int,
    ) -> None:
        self.registry = registry
        self.refresh = refresh
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=_MAX_REQUEST
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror}; choose "
                "another --metrics-port (or stop what holds this one)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics for Prometheus on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method not in ("GET", "HEAD"):
                status, body = "405 Method Not Allowed", "only GET /metrics is served\n"
            elif path != "/metrics":
                status, body = "404 Not Found", "the metrics are at /metrics\n"
            else:
                await self.refresh()
                status, body = "200 OK", self.registry.render()
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + (data if method != "HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a client that sent no complete request within bounds gets nothing
        except ConnectionError:
            pass
        finally:
            writer.close()
