"""DurableFuture for Django.

Add ``"dfcore.integrations.django"`` to ``INSTALLED_APPS`` and configure it in settings::

    DFCORE = {"NATS_URL": "nats://127.0.0.1:4222", "NAMESPACE": "shop"}

Then, in any installed app's ``workflows.py`` (found by autodiscovery)::

    from dfcore.integrations.django import app

    @app.activity
    def charge(order_id: int) -> str: ...

    @app.workflow
    async def fulfil(ctx, order_id: int) -> str:
        return await ctx.activity(charge, order_id)

Start work from a view with ``fulfil.start(order.pk)``, or exactly once with the
transaction that creates the order: ``start_on_commit(fulfil, order.pk)``. Run workers with
``python manage.py df_worker``. See ``docs/django.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .runtime import app, get_app, get_settings

if TYPE_CHECKING:
    from .outbox import make_relay, start_on_commit

__all__ = ["app", "get_app", "get_settings", "make_relay", "start_on_commit"]


def __getattr__(name: str) -> Any:
    # The outbox needs the ORM's models, which can only be imported once Django's app registry
    # is ready; importing them lazily lets settings and workflows.py import this package.
    if name in ("start_on_commit", "make_relay"):
        from . import outbox

        return getattr(outbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
