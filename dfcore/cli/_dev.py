"""The one development runner of ``dfcore dev``, ``flask df dev`` and ``manage.py df dev``.

It starts an embedded NATS JetStream server (the port stays the same from run to run), points
the App at it, runs a worker on a thread with the outbox relay where the project has one, and
serves the framework's development web server in the foreground (the core CLI has none: it
waits). Ctrl-C or SIGTERM stops everything, in order: the web server, the relay, the worker,
the App's connections, then NATS. ``--nats-only`` runs only the server.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from dfcore._app import App
from dfcore.cli._host import Host
from dfcore.cli._plugins import DevService, dev_services
from dfcore.core._config import Advice, Settings
from dfcore.core._errors import ConfigurationError
from dfcore.jetstream._server import EmbeddedServer, port_in_use
from dfcore.worker._worker_thread import WorkerThread


@dataclass
class DevOptions:
    """What ``dev`` was asked for (its command-line options)."""

    data_dir: Path | None = None
    nats_port: int = 0
    nats_only: bool = False
    relay: bool = True
    web_host: str = "127.0.0.1"
    web_port: int | None = None  # None: the host's default
    worker: dict[str, Any] = field(default_factory=dict)  # App.worker(**worker)
    services: bool = True  # the extras' services beside the site (the dashboard)


def run_dev(host: Host, options: DevOptions) -> None:
    """Run the dev server, a worker, the relay and the web server until Ctrl-C or SIGTERM.

    Raises:
        ConfigurationError: the NATS server could not start (its port is taken, ...).
        DFError: the worker could not start.
    """
    settings = host.app().settings
    data = (options.data_dir or host.dev_data()).resolve()
    server, reach = start_dev_server(data, settings, options.nats_port)
    if options.nats_only:
        try:
            wait_for_interrupt(lambda: host.echo(dev_banner(server, data, reach, host.advice())))
        finally:
            server.stop()
        return
    stop_relay = threading.Event()
    services: list[DevService] = []
    app: App | None = None
    worker: WorkerThread | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        app = host.point_at(server.url)
        worker = WorkerThread(app.worker(**options.worker)).start()
        relaying = options.relay and host.start_relay is not None and host.start_relay(stop_relay)
        queues = ", ".join(worker.worker.queues) if worker.worker else ""
        serving = f"namespace {app.settings.namespace!r}, queues {queues}"
        if host.start_relay is not None:
            serving += ", with the outbox relay" if relaying else ", no outbox relay"
        lines = [f"\nNATS JetStream  {server.url}  (data in {data})", f"Worker          {serving}"]
        beside: list[str] = []  # the extras' services, shown after the site
        if options.services:
            services = _start_services(app, beside)
        if host.web is None:
            try_it = f"Try it:         {host.advice().run('workflow list')}"
            shown = [*lines, *beside, reach, try_it, ""]
            wait_for_interrupt(lambda: host.echo("\n".join(shown)))
        else:

            def announce(site: str) -> None:
                host.echo("\n".join([*lines, f"Site            {site}", *beside, reach, ""]))

            try:
                host.web(options.web_host, options.web_port or host.web_port, announce)
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for service in services:
            service.stop()
        stop_relay.set()
        if worker is not None:
            worker.stop()
        if app is not None:
            app.close()  # the web's and the relay's connection, before NATS stops
        server.stop()
        parts = "the web server, the worker and NATS" if host.web else "the worker and NATS"
        host.echo(f"Stopped {parts}.")


def _start_services(app: App, lines: list[str]) -> list[DevService]:
    """Start what installed extras run beside the site, adding a line for each."""
    started = []
    for name, start in dev_services():
        try:
            service = start(app)
        except Exception as exc:  # the site runs on without it
            lines.append(f"{name.capitalize():15} not started: {exc}")
            continue
        started.append(service)
        lines.append(f"{name.capitalize():15} {service.url}")
    return started


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the web server as Ctrl-C does (they handle only KeyboardInterrupt)."""
    raise KeyboardInterrupt


_PORT_FILE = "port"  # in the data folder: the port of the last run, used again
_LOOPBACK = {"127.0.0.1", "localhost"}  # where the embedded server listens


def start_dev_server(data: Path, settings: Settings, port: int = 0) -> tuple[EmbeddedServer, str]:
    """Start the embedded server of a dev command (``dfcore dev``, ``df_dev``, ``flask df dev``).

    Its port stays the same from run to run, so what other terminals were told keeps working:
    ``port`` when given; else the port of the configured URL, when the settings name one on
    this machine (then every process of the project reaches the server through its settings);
    else the port of the last run with this data folder, if it is free; else a free one.

    Returns:
        The running server, and what to tell the user about reaching it from other
        terminals, in the framework's terms (``settings.advice``).

    Raises:
        ConfigurationError: the server could not start (the port is taken, ...).
    """
    data.mkdir(parents=True, exist_ok=True)
    configured = _configured_local_port(settings)
    remembered = _remembered_port(data)
    chosen = port or configured or remembered
    if not port and configured and port_in_use("127.0.0.1", configured):
        raise ConfigurationError(
            f"{settings.advice.name('nats_url')} points at {settings.display_url}, where a "
            "server already listens, so the embedded one cannot start there: use that server "
            f"(run {settings.advice.run('worker')} against it), or give the embedded one "
            "another port with --port / --nats-port"
        )
    server = EmbeddedServer(
        data / "nats",
        port=chosen,
        log_file=str(data / "nats.log"),
        kill_with_parent=True,  # a crashed dev command leaves no server behind (Linux)
    )
    server.start()
    (data / _PORT_FILE).write_text(f"{server.port}\n")
    return server, _reaching_it(settings, server, configured)


def _url_configured(settings: Settings) -> bool:
    """Whether the settings name a server: set, and not the default (which the Flask
    extension writes into the config; a real NATS server's usual port besides)."""
    return "nats_url" in settings.sources and settings.nats_url != Settings().nats_url


def _configured_local_port(settings: Settings) -> int:
    """The port of a configured single URL on this machine (0: none was configured)."""
    if not _url_configured(settings) or len(settings.servers) != 1:
        return 0
    parts = urlsplit(settings.servers[0])
    try:
        configured = parts.port
    except ValueError:
        return 0
    if parts.scheme != "nats" or parts.hostname not in _LOOPBACK or not configured:
        return 0
    return configured


def _remembered_port(data: Path) -> int:
    try:
        port = int((data / _PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return 0
    return port if 0 < port < 65536 and not port_in_use("127.0.0.1", port) else 0


def _reaching_it(settings: Settings, server: EmbeddedServer, configured: int) -> str:
    where = settings.advice.name("nats_url")
    if configured == server.port:
        return f"Other processes of the project reach it through {where}."
    if _url_configured(settings):
        return (
            f"{where} points at {settings.display_url}, so the project's other processes use "
            f"that server, not this one; set it to {server.url} to use this one."
        )
    return (
        f"Other terminals reach it after `export DF_NATS_URL={server.url}` (the port stays the "
        "same from run to run)."
    )


def dev_banner(server: EmbeddedServer, data: Path, reach: str, advice: Advice) -> str:
    """What ``--nats-only`` prints: the server, how to reach it, and what to run beside it."""
    lines = [
        f"\nNATS JetStream  {server.url}  (data in {data}), and nothing else (--nats-only)",
        reach,
        f"Run a worker:   {advice.run('worker')}",
    ]
    if advice.web:
        lines.append(f"Run the site:   `{advice.web}`")
    lines.append("Ctrl-C stops the server.\n")
    return "\n".join(lines)


def wait_for_interrupt(announce: Callable[[], None]) -> None:
    """Call ``announce``, then block until Ctrl-C or SIGTERM (``--nats-only``, once the server
    runs). The signals are caught from before the announcement, which may prompt them."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in signals}
    try:
        announce()
        stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
