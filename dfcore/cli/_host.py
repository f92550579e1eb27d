"""Where a command of the tree runs: the core CLI, a Flask app, or a Django project.

The commands (``_commands.py``) are written once. What differs between ``dfcore worker -A
proj``, ``flask df worker`` and ``manage.py df worker`` is how the App is found, whether there
is a transactional outbox to relay, where the dev server keeps its data and which web server it
runs: a :class:`Host`, the click context object the commands read.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from dfcore._app import App
from dfcore.core._config import Advice
from dfcore.core._errors import DFError

#: ``serve(host, port, announce)``: run a development web server until KeyboardInterrupt,
#: calling ``announce(url)`` once it listens.
WebServer = Callable[[str, int, Callable[[str], None]], None]


@dataclass
class Host:
    """What the commands need of the program that runs them.

    Attributes:
        name: how the user runs the commands, for messages: ``"dfcore"``, ``"flask df"``,
            ``"python manage.py df"``.
        get_app: the App, loaded when a command first needs it.
        dev_data: the default data folder of ``dev`` (``--data-dir`` overrides it).
        start_relay: start the transactional outbox's relay on a thread, stopped by the event;
            False when the outbox is not configured. None: this host has no outbox.
        use_server: point the App (and the processes this one starts) at the dev server's URL;
            returns the App to use.
        web: the development web server ``dev`` runs in the foreground, if any.
        web_port: its default port.
        echo: writes one line of output (Django commands write to their ``self.stdout``).
        extra_settings: an extra's settings where the framework keeps them, by the extra's
            name (``"dashboard"``: Django's ``DFCORE["DASHBOARD"]``, Flask's
            ``DF_DASHBOARD_*``), as lower-case keys.
    """

    name: str
    get_app: Callable[[], App]
    dev_data: Callable[[], Path] = lambda: Path(".df")
    start_relay: Callable[[threading.Event], bool] | None = None
    use_server: Callable[[str], App] | None = None
    web: WebServer | None = None
    web_port: int = 8000
    echo: Callable[[str], None] = field(default=click.echo)
    extra_settings: Callable[[str], Mapping[str, Any]] = lambda name: {}
    takes_app_option: bool = False  # whether -A/--app names the App (the core CLI only)
    app_spec: str | None = None  # the core CLI's -A MODULE[:APP]

    def app(self) -> App:
        try:
            return self.get_app()
        except DFError as exc:
            raise click.ClickException(str(exc)) from exc

    def advice(self) -> Advice:
        """How messages name commands and settings: the App's, with the core CLI's ``-A``."""
        advice = self.app().settings.advice
        if self.app_spec and advice.command == Advice.command:
            advice = dataclasses.replace(advice, command=f"{self.name} -A {self.app_spec} {{}}")
        return advice

    def point_at(self, url: str) -> App:
        """Have the App, and the processes started from here, use the server at ``url``."""
        os.environ["DF_NATS_URL"] = url
        if self.use_server is not None:
            return self.use_server(url)
        app = self.app()
        app.configure(nats_url=url)
        return app


def current_host() -> Host:
    """The host of the command being run (set by the group that holds the commands)."""
    host = click.get_current_context().find_object(Host)
    if host is None:
        raise click.UsageError(
            "this command runs inside `dfcore`, `flask df` or `manage.py df`; "
            "add it to a group that sets a dfcore.cli.Host as the context object"
        )
    return host


def _app_of(value: object) -> App | None:
    """``value`` if it is an App, or the App it stands for (a facade's ``df_app``, as the
    Celery facade's app has)."""
    if isinstance(value, App):
        return value
    inner = getattr(value, "df_app", None) if not isinstance(value, type) else None
    return inner if isinstance(inner, App) else None


def load_app(spec: str | None) -> App:
    """Import ``module:attribute`` (or ``module``, finding its App) and return the App."""
    if not spec:
        return App("dfcore-cli")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DFError(f"cannot import {module_name!r} given with -A/--app: {exc}") from exc
    if attr:
        app = _app_of(getattr(module, attr, None))
        if app is None:
            raise DFError(f"{spec!r}: {module_name} has no App named {attr!r}")
        return app
    found = {id(app): app for v in vars(module).values() if (app := _app_of(v)) is not None}
    apps = list(found.values())
    if len(apps) != 1:
        raise DFError(
            f"{module_name} defines {len(apps)} App objects; name one with -A {module_name}:NAME"
        )
    return apps[0]
