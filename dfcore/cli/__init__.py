"""The ``dfcore`` command line, for projects and for framework integrations.

``dfcore`` is a click group (:data:`cli`); ``flask df`` and ``manage.py df`` add the same
command objects (:data:`COMMANDS`: ``worker``, ``dev``, ``workflow``, ``dlq``) to their own
groups, with a :class:`Host` as the click context object saying where the App comes from::

    group = click.Group("df")
    for command in dfcore.cli.COMMANDS:
        group.add_command(command)
    group.main(obj=dfcore.cli.Host(name="myframework df", get_app=load_my_app))

Projects that configure logging themselves use :class:`JsonFormatter` for the JSON lines of
``--log-format json`` (in Django's ``LOGGING``: ``{"()": "dfcore.cli.JsonFormatter"}``).

The argparse helpers of earlier versions (``add_worker_arguments``, ``worker_options``,
``run_workflow_command`` ...) still work, with a ``DeprecationWarning``: build on the click
commands instead.
"""

from __future__ import annotations

import warnings
from typing import Any

from dfcore.cli import _argparse  # the argparse helpers the click commands replace
from dfcore.cli._commands import COMMANDS, CONTEXT, cli, main
from dfcore.cli._host import Host, current_host
from dfcore.cli._logging import JsonFormatter, setup_logging
from dfcore.worker._worker_thread import WorkerThread

__all__ = [
    "COMMANDS",
    "CONTEXT",
    "Host",
    "JsonFormatter",
    "WorkerThread",
    "cli",
    "current_host",
    "main",
    "setup_logging",
]


def __getattr__(name: str) -> Any:
    if name not in _argparse.__all__:
        raise AttributeError(f"module 'dfcore.cli' has no attribute {name!r}")
    warnings.warn(
        f"dfcore.cli.{name} is deprecated and will be removed: the command line is a click "
        "group now; add dfcore.cli.COMMANDS to your own click group instead (docs/cli.md)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_argparse, name)
