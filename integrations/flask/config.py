"""The ``DF_*`` keys of a Flask app's config: defaults, validation, error messages.

Every key is ``setdefault`` on ``app.config`` by ``init_app``, so ``app.config`` shows what is in
effect. A key's default there is the value of the environment variable of the same name
(``DF_NATS_URL``), else the built-in default: environment variables keep working, and a value
set in the config wins over the environment.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from dfcore import ConfigurationError, Settings
from dfcore.outbox import OutboxSettings

PREFIX = "DF_"
#: Keys of extras, read by their commands: DF_DASHBOARD_USER ... (docs/dashboard.md).
EXTRAS = ("DF_DASHBOARD_",)

#: The extension's own keys (beyond the core settings) and their defaults.
OWN_DEFAULTS: dict[str, Any] = {
    # The outbox's database: a SQLAlchemy URL or Engine. None: Flask-SQLAlchemy's default engine.
    "DF_OUTBOX_DATABASE_URI": None,
    **{PREFIX + key: default for key, default in OutboxSettings.keys().items()},
}


@dataclass(frozen=True)
class FlaskSettings:
    """The extension's own ``DF_*`` keys of a Flask app's config, validated (the core
    settings are read by ``App.config_from_object``)."""

    outbox: OutboxSettings
    outbox_database_uri: object | None


def core_keys() -> dict[str, str]:
    """``DF_NATS_URL`` -> ``nats_url`` for every core setting."""
    return {PREFIX + name.upper(): name for name in Settings.names()}


def set_defaults(config: MutableMapping[str, Any], base: Settings) -> None:
    """``setdefault`` every key: core settings from ``base``, the extension's own from the
    environment variable of the same name, else the built-in defaults."""
    for key, name in core_keys().items():
        config.setdefault(key, getattr(base, name))
    for key, default in OWN_DEFAULTS.items():
        config.setdefault(key, _from_environment(key, default))


def _from_environment(key: str, default: Any) -> Any:
    """``os.environ[key]`` as the type of ``default``; a value that does not parse is kept as
    the string, so validation names the key."""
    raw = os.environ.get(key)
    if not raw:
        return default
    if isinstance(default, bool):
        return _BOOLEANS.get(raw.strip().lower(), raw)
    if isinstance(default, int | float):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS |= {"0": False, "false": False, "no": False, "off": False}


def read_config(config: Mapping[str, Any], where: str) -> FlaskSettings:
    """Validate the ``DF_*`` keys of a Flask config.

    Args:
        config: ``app.config``.
        where: names the config in messages (``'the config of Flask app "shop"'``).

    Raises:
        ConfigurationError: a ``DF_*`` key is unknown (a typo) or has an invalid value; the
            message names the key.
    """
    core = core_keys()
    for key in config:
        known = key in core or key in OWN_DEFAULTS or str(key).startswith(EXTRAS)
        if isinstance(key, str) and key.startswith(PREFIX) and not known:
            raise ConfigurationError(_unknown_key(key, [*core, *OWN_DEFAULTS], where))
    own = {
        key.removeprefix(PREFIX): config.get(key, default) for key, default in OWN_DEFAULTS.items()
    }
    outbox = OutboxSettings.from_mapping(own, lambda key: f"{PREFIX}{key} in {where}")
    uri = own["OUTBOX_DATABASE_URI"]
    if uri is not None and not (isinstance(uri, str) and uri) and not _is_engine(uri):
        raise ConfigurationError(
            f"DF_OUTBOX_DATABASE_URI in {where} is invalid: got {uri!r}; expected a SQLAlchemy "
            'URL such as "postgresql+psycopg://localhost/shop", an Engine, or None to use '
            "Flask-SQLAlchemy's engine"
        )
    return FlaskSettings(
        outbox=outbox,
        outbox_database_uri=uri,
    )


def _unknown_key(key: str, valid: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{key!r} in {where} is not a DurableFuture setting{hint}; "
        f"valid keys are: {', '.join(sorted(valid))}"
    )


def _is_engine(value: object) -> bool:
    try:
        from sqlalchemy.engine import Engine
    except ImportError:  # pragma: no cover - SQLAlchemy is optional
        return False
    return isinstance(value, Engine)
