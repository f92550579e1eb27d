"""The ``DFCORE`` setting: one dict in ``settings.py``, validated into ImproperlyConfigured.

Keys are the core settings in upper case (``NATS_URL``, ``NAMESPACE``, ``TASK_QUEUE``...; see
``dfcore.Settings``) plus the integration's own, below. Settings are read when they are first
needed and again whenever ``DFCORE`` changes (``override_settings`` in tests).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from dfcore import ConfigurationError, Settings
from dfcore.outbox import OutboxSettings

SETTING = "DFCORE"

# The integration's own keys and their defaults; the outbox options (WORKER_RELAY,
# PUBLISH_ON_COMMIT, RELAY_INTERVAL, RELAY_MIN_AGE, OUTBOX_RETENTION) are shared with the Flask
# integration and documented on dfcore.outbox.OutboxSettings.
DEFAULTS: dict[str, Any] = {
    # "proj.df:app": use your own App (Celery style) instead of the built-in project App.
    "APP": None,
    # Modules imported from every installed app, so their workflows and activities register.
    "AUTODISCOVER": ("workflows", "activities"),
    # Database aliases the relay watches; None: every database the outbox is migrated to.
    "OUTBOX_DATABASES": None,
    # The dashboard's settings ({"USER": ..., "PASSWORD": ...}; docs/dashboard.md), read by
    # `manage.py df_dashboard`.
    "DASHBOARD": None,
    **OutboxSettings.keys(),
}


@dataclass(frozen=True)
class DjangoSettings:
    """``settings.DFCORE``, validated: the core part and the integration's options."""

    core: Mapping[str, Any]
    app: str | None
    autodiscover: tuple[str, ...]
    worker_relay: bool
    publish_on_commit: bool
    relay_interval: float
    relay_min_age: float
    outbox_retention: float | None
    outbox_databases: tuple[str, ...] | None


def read_settings() -> DjangoSettings:
    """Read and validate ``settings.DFCORE`` now.

    Raises:
        ImproperlyConfigured: ``DFCORE`` is not a dict, has an unknown key, or a value of the
            wrong type; the message names the key.
    """
    raw = getattr(django_settings, SETTING, None) or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"settings.{SETTING} must be a dict such as "
            f'{{"NATS_URL": "nats://127.0.0.1:4222"}}, not {type(raw).__name__}'
        )
    core_keys = {name.upper(): name for name in Settings.names()}
    for key in raw:
        if key not in core_keys and key not in DEFAULTS:
            raise ImproperlyConfigured(_unknown_key(key, [*core_keys, *DEFAULTS]))
    own = {key: raw.get(key, default) for key, default in DEFAULTS.items()}
    try:
        outbox = OutboxSettings.from_mapping(own, label)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(str(exc)) from None
    return DjangoSettings(
        core={key: value for key, value in raw.items() if key in core_keys},
        app=_optional_str(own, "APP"),
        autodiscover=_names(own, "AUTODISCOVER"),
        worker_relay=outbox.worker_relay,
        publish_on_commit=outbox.publish_on_commit,
        relay_interval=outbox.relay_interval,
        relay_min_age=outbox.relay_min_age,
        outbox_retention=outbox.outbox_retention,
        outbox_databases=None
        if own["OUTBOX_DATABASES"] is None
        else _names(own, "OUTBOX_DATABASES"),
    )


def label(key: str) -> str:
    return f'settings.{SETTING}["{key}"]'


def _unknown_key(key: object, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key).upper(), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{label(str(key))} is not a DurableFuture setting{hint}; "
        f"valid keys are: {', '.join(sorted(valid))}"
    )


def _invalid(key: str, value: object, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{label(key)} is invalid: got {value!r}; expected {expected}")


def _optional_str(own: Mapping[str, Any], key: str) -> str | None:
    value = own[key]
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _invalid(key, value, 'an import path such as "proj.df:app"')
    return value


def _names(own: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = own[key]
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value or ()):
        raise _invalid(key, value, 'a list of names, such as ["workflows", "activities"]')
    return tuple(value)
