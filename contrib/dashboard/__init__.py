"""The DurableFuture dashboard: start, watch, inspect and steer workflows in a browser.

Serve it with the CLI (``dfcore -A proj dashboard``, ``python manage.py df_dashboard``,
``flask df dashboard``), or from code::

    from dfcore.contrib.dashboard import DashboardSettings, serve

    await serve(app, DashboardSettings(user="ops", password="..."))

It needs the ``dashboard`` extra (``pip install "durablefuture[dashboard]"``, for aiohttp).
docs/dashboard.md shows the pages and lists the JSON API (``/api/openapi.json``).
"""

from __future__ import annotations

from typing import Any

from ._auth import DashboardSettings

__all__ = ["DashboardSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    """``create_app`` and ``serve`` need aiohttp; importing them says so when it is missing."""
    if name not in ("create_app", "serve"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _server
    except ImportError as exc:
        if exc.name != "aiohttp":
            raise
        raise ImportError(
            'the dashboard needs aiohttp: pip install "durablefuture[dashboard]"'
        ) from exc
    return getattr(_server, name)
