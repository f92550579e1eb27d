"""The Django app ``dfcore`` (add ``"dfcore.integrations.django"`` to INSTALLED_APPS)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import autodiscover_modules


class DurableFutureConfig(AppConfig):
    name = "dfcore.integrations.django"
    label = "dfcore"
    verbose_name = "DurableFuture"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import runtime

        setting_changed.connect(_on_setting_changed, dispatch_uid="dfcore-settings")
        conf = runtime.get_settings()  # a bad DFCORE fails at start-up, naming the key
        autodiscover_modules(*conf.autodiscover)

        from .tasks import register_configured_backends

        register_configured_backends()  # a TASKS backend of ours registers its workflow now
        checks.register(check_outbox_tables)


def check_outbox_tables(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn where the outbox table is missing, before ``start_on_commit`` fails on it.

    A database that cannot be reached now is passed over: this check is no connection test.
    """
    from django.db import DatabaseError, connections, router

    from .models import OutboxEntry

    table = OutboxEntry._meta.db_table
    found: list[checks.CheckMessage] = []
    for alias in connections:
        if not router.allow_migrate_model(alias, OutboxEntry):
            continue
        try:
            missing = table not in connections[alias].introspection.table_names()
        except DatabaseError:
            continue
        if missing:
            where = "" if alias == "default" else f" --database {alias}"
            found.append(
                checks.Warning(
                    f"database {alias!r} has no {table} table, so start_on_commit() fails "
                    "there and no relay publishes from it",
                    hint=f"run `python manage.py migrate dfcore{where}`",
                    id="dfcore.W001",
                )
            )
    return found


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    from . import runtime
    from .conf import SETTING

    if setting == SETTING:
        runtime.reset()
        try:
            runtime.get_app()  # apply the new settings to the App that workflows are bound to
        except ImproperlyConfigured:
            pass  # raised again, naming the key, when the settings are next used
