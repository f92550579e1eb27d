"""How kombu and Celery find ``dfnats://``.

Celery looks result backends up among the ``celery.result_backends`` entry points, so
``pyproject.toml`` declares ours there. kombu has no entry points for transports: it looks
``dfnats`` up in ``kombu.transport.TRANSPORT_ALIASES``. It does load its
``kombu.serializers`` entry points whenever it is imported, so ours, named ``dfcore-json``,
adds the alias on the way; the serializer it registers is plain JSON under its own name.
"""

from __future__ import annotations

import json
from typing import Any

TRANSPORT = "dfcore.contrib.kombu.transport:Transport"
ALIASES = ("dfnats", "dfnatss")


def register() -> None:
    """Make ``dfnats://`` (and ``dfnatss://``, for TLS) a kombu transport."""
    from kombu.transport import TRANSPORT_ALIASES

    for alias in ALIASES:
        TRANSPORT_ALIASES.setdefault(alias, TRANSPORT)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


register()
#: The ``kombu.serializers`` entry point: kombu calls ``register("dfcore-json", *SERIALIZER)``.
SERIALIZER = (_dumps, json.loads, "application/x-dfcore-json", "utf-8")
