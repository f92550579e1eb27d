"""``dashboard``: the command that serves the dashboard, and the dev runner's service.

Both reach the core CLI by entry points (``dfcore.commands``, ``dfcore.dev_services`` in
pyproject.toml), so ``dfcore``, ``flask df`` and ``manage.py df`` have them while the extra is
installed, and the core never imports this package. aiohttp is imported only when they run.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import click

from dfcore import App

DEFAULT_PORT = 8070
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("dashboard", context_settings=CONTEXT)
@click.option("--host", default=None, metavar="HOST", help="Address to listen on (127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (8070; 0: any free one)."
)
@click.option("--read-only", is_flag=True, default=None, help="Hide every action; refuse writes.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="No login: for local development, on a loopback address only.",
)
def dashboard(host: str | None, port: int | None, read_only: bool | None, no_auth: bool) -> None:
    """Serve the web dashboard: workflows, histories, workers, queues, actions.

    Who may log in comes from the settings: DF_DASHBOARD_USER and DF_DASHBOARD_PASSWORD (basic
    auth) or DF_DASHBOARD_TOKEN, or their Django (DFCORE["DASHBOARD"]) and Flask
    (DF_DASHBOARD_*) forms.
    """
    from dfcore import ConfigurationError
    from dfcore.cli import current_host

    from ._auth import DashboardSettings

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise click.UsageError(
            'the dashboard needs aiohttp: pip install "durablefuture[dashboard]"'
        ) from None
    cli_host = current_host()
    options: dict[str, Any] = {"host": host, "port": port, "read_only": read_only}
    if no_auth:
        options["auth"] = "none"
    try:
        settings = DashboardSettings.resolve(options, cli_host.extra_settings("dashboard"))
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    app = cli_host.app()

    def started(url: str) -> None:
        who = "no login (local development)" if settings.mode == "none" else settings.mode
        mode = ", read-only" if settings.read_only else ""
        cli_host.echo(f"Dashboard for app {app.name!r} at {url}  ({who}{mode}); Ctrl-C stops it")

    asyncio.run(_serve_until_signalled(app, settings, started))


async def _serve_until_signalled(app: App, settings: Any, started: Callable[[str], None]) -> None:
    from ._server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(app, settings, started=started, stop=stop)
    finally:
        await app.aclose()


class DevDashboard:
    """The dashboard beside ``dev``'s site, on a thread with its own event loop; no login
    (``dev`` is local development) and on 127.0.0.1 only."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.url: str | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dfcore-dashboard", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> DevDashboard:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        from ._auth import DashboardSettings
        from ._server import serve

        port = DEFAULT_PORT if _free(DEFAULT_PORT) else 0
        settings = DashboardSettings(auth="none", port=port)

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                await serve(self.app, settings, started=self._started, stop=self._stop)
            finally:
                await self.app.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start(), or logged after it
            self._error = exc
            self._ready.set()

    def _started(self, url: str) -> None:
        self.url = url
        self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def dev_service(app: App) -> DevDashboard:
    """What ``dev`` starts (entry point ``dfcore.dev_services``): the dashboard, running.

    Raises:
        RuntimeError: the extra is not installed (``dev`` shows the message and goes on).
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise RuntimeError('pip install "durablefuture[dashboard]" to have it here') from None
    return DevDashboard(app).start()


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0
