"""A kombu transport on NATS JetStream: keep Celery, change the broker URL.

``broker_url = "dfnats://127.0.0.1:4222"`` runs an unmodified Celery app, and its own
``celery worker``, on JetStream (``transport``), and ``result_backend = "dfnats://..."`` keeps
task results there too (``backend``), so no Redis or RabbitMQ is needed. Installing
``durablefuture[kombu]`` registers both names with kombu and Celery; importing this package
registers them as well. ``docs/celery.md`` says which path fits whom.
"""

from __future__ import annotations

from ._register import register

register()

__all__ = ["register"]
