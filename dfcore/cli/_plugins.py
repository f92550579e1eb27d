"""Commands and dev services that installed extras add to the command line.

An extra (the dashboard, say) names a click command in the ``dfcore.commands`` entry-point
group, and may name in ``dfcore.dev_services`` a callable that ``dev`` calls with the App: it
starts something beside the site and returns an object with ``url`` and ``stop()``. The core
finds them by name only, so it never imports an extra, and a broken extra is reported without
taking the command line down.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from typing import Any, Protocol

import click

log = logging.getLogger("dfcore.cli")


class DevService(Protocol):
    url: str | None

    def stop(self) -> None: ...


def commands() -> list[click.Command]:
    """The click commands of the installed extras."""
    found = []
    for point in importlib.metadata.entry_points(group="dfcore.commands"):
        command = _load(point)
        if isinstance(command, click.Command):
            found.append(command)
    return found


def dev_services() -> list[tuple[str, Callable[[Any], DevService]]]:
    """``(name, start)`` of each service ``dev`` runs beside the site."""
    found = []
    for point in importlib.metadata.entry_points(group="dfcore.dev_services"):
        start = _load(point)
        if callable(start):
            found.append((point.name, start))
    return found


def _load(point: importlib.metadata.EntryPoint) -> Any:
    try:
        return point.load()
    except Exception as exc:  # an extra installed without what it needs
        log.debug("cannot load %s (%s): %s", point.name, point.value, exc)
        return None
