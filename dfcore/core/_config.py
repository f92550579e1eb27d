"""Settings: every knob, its default, and where its value comes from.

A setting is looked up in four places; the first that has it wins:

1. keyword arguments, ``App("shop", nats_url="nats://nats:4222")``;
2. a config object, ``app.config_from_object("proj.settings")``, with the ``DF_`` prefix
   (``DF_NATS_URL = ...``) as in Celery;
3. environment variables ``DF_<NAME>`` (``DF_NATS_URL``); unknown ``DF_*`` variables are
   ignored, and an empty variable counts as unset;
4. the defaults below.

A keyword argument or config value of ``None`` counts as unset. Every value is validated, and
an invalid one raises :class:`~dfcore.ConfigurationError` naming the key as it was written
(``nats_url``, ``environment variable DF_NATS_URL``, ``DF_NATS_URL in proj.settings``).

=========================== ========================== ========================================
setting                     default                    meaning
=========================== ========================== ========================================
nats_url                    ``nats://127.0.0.1:4222``  server URL(s), comma-separated;
                                                       schemes nats, tls, ws, wss
namespace                   ``df``                     prefix of every stream and subject, so
                                                       apps (and test runs) share one server
task_queue                  ``default``                queue this app's workers poll
connect_timeout             ``5.0``                    seconds a client call waits, in all,
                                                       for a server that is unreachable or
                                                       silent (then DFConnectionError)
activity_concurrency        ``64``                     activities one worker runs at once
workflow_concurrency        ``256``                    workflow tasks one worker runs at once
workflow_cache_size         ``1000``                   running workflows kept in memory
activity_ack_wait           ``30.0``                   seconds without progress before
                                                       JetStream redelivers a task
workflow_ack_wait           ``10.0``                   seconds before JetStream hands an
                                                       unfinished workflow task (its worker
                                                       died) to another worker
stream_replicas             ``1``                      JetStream replicas (1-5)
worker_event_loop           ``auto``                   the worker command's event loop:
                                                       uvloop where installed, or asyncio
worker_gc_threshold         ``20000``                  the worker command's garbage
                                                       collector: allocations between young
                                                       collections (Python's: 700; 0 keeps it)
storage                     ``file``                   JetStream storage: file or memory
codec                       ``None``                   a PayloadCodec, or its import path
default_activity_timeout    ``300.0``                  start-to-close seconds when an
                                                       activity sets none
history_retention           ``604800.0`` (7 days)      seconds a finished workflow's history,
                                                       status and dead letters are kept;
                                                       ``0`` keeps them for ever
schedules                   ``{}``                     schedules by id (docs/schedules.md);
                                                       JSON in ``DF_SCHEDULES``
nats_token                  ``None``                   token the server expects
                                                       (``authorization { token }``)
nats_user                   ``None``                   user name; needs nats_password
nats_password               ``None``                   that user's password
nats_nkey_seed              ``None``                   a user NKey seed itself (``SU...``),
                                                       e.g. from a secret env variable
nats_nkey_seed_file         ``None``                   path of a file holding that seed
nats_creds_file             ``None``                   path of a ``.creds`` file (user JWT
                                                       and seed, for operator/JWT auth)
nats_tls_ca_file            ``None``                   PEM CA certificates that verify the
                                                       server; unset: the system trust store
nats_tls_cert_file          ``None``                   PEM client certificate (mutual TLS);
                                                       needs nats_tls_key_file
nats_tls_key_file           ``None``                   its private key, PEM, unencrypted
nats_tls_hostname           ``None``                   name the server's certificate must
                                                       carry, when not the URL's host
=========================== ========================== ========================================

Authentication uses one method: a token, a user and password (in the settings or in the URL,
``nats://user:password@host``), an NKey seed (``nats_nkey_seed`` for the seed itself, or
``nats_nkey_seed_file``), or a credentials file; setting two is an error naming both. The NKey
methods need the ``nkeys`` package (``pip install 'durablefuture[nkeys]'``). TLS is required
for every connection when a URL is ``tls://`` or ``wss://`` or a CA or client certificate file
is set: credentials are then never sent to a server that does not offer TLS. Without those,
a server that requires TLS is still verified, against the system trust store.

Secrets (``nats_token``, ``nats_password``, ``nats_nkey_seed``, a password in ``nats_url``)
never appear in error messages, ``repr(settings)`` or logs; :attr:`Settings.display_url` is the
URL with its secret replaced by ``***``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

from dfcore.core._codec import PayloadCodec
from dfcore.core._config_parsers import PARSERS, has_codec_methods, parse
from dfcore.core._errors import ConfigurationError
from dfcore.core._schedules import ScheduleSpec
from dfcore.core._security import MASK, SECRETS, check_security, mask_url

__all__ = [
    "ENV_PREFIX",
    "SETTING_NAMES",
    "Settings",
    "SourcedValue",
    "import_object",
    "load_codec",
    "read_config_object",
    "resolve_settings",
]

ENV_PREFIX = "DF_"


class SourcedValue(NamedTuple):
    """A setting's value and where it was written, for error messages."""

    label: str
    """The key as the user wrote it, e.g. ``"DF_NATS_URL in proj.settings"``."""
    value: Any


# --- the settings -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Advice:
    """How messages tell users what to run and set, in the terms of the framework they use.

    The core's are the ``dfcore`` command's and ``App``'s; the Django and Flask integrations give
    theirs (``python manage.py df_dev``, ``DFCORE["NATS_URL"]``).

    Attributes:
        command: a command of the CLI, with ``{}`` where its words go
            (``"python manage.py df_{}"``).
        setting: where a setting is set, with ``{upper}`` and ``{lower}`` where its name goes
            (``'DFCORE["{upper}"]'``).
        web: the command that runs the development web server, if the framework has one.
    """

    command: str = "dfcore -A yourmodule:app {}"
    setting: str = "DF_{upper} or App({lower}=...)"
    web: str = ""

    def run(self, words: str) -> str:
        """The command line that runs ``words`` (``"dlq list"``), quoted for a message."""
        return f"`{self.command.format(words)}`"

    def name(self, setting: str) -> str:
        """Where ``setting`` (``"nats_url"``) is set."""
        return self.setting.format(upper=setting.upper(), lower=setting.lower())


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every DurableFuture setting, validated; see the module docstring for the table.

    Build one with :func:`resolve_settings` (or directly, for tests); values are checked
    on construction. ``dataclasses.replace(settings, task_queue="emails")`` derives a copy.

    Attributes:
        nats_url: server URL(s), comma-separated (see :attr:`servers`).
        namespace: prefix of every stream and subject.
        task_queue: the queue workers poll and starts go to by default.
        connect_timeout: seconds a client call waits, in all, for a server that is
            unreachable or silent before it raises DFConnectionError (a worker's first
            connect, too).
        activity_concurrency: activities one worker runs at once.
        workflow_concurrency: workflow tasks one worker processes at once.
        workflow_cache_size: running workflows a worker keeps in memory.
        activity_ack_wait: seconds a task may go without progress before redelivery.
        workflow_ack_wait: seconds before an unfinished workflow task is redelivered.
        stream_replicas: JetStream stream replicas (1-5).
        worker_event_loop: the event loop of :meth:`App.run_worker` (the worker commands):
            ``"auto"`` (uvloop where it is installed, as it is on Linux and macOS, else
            asyncio's), ``"asyncio"`` or ``"uvloop"``.
        worker_gc_threshold: the first threshold of Python's garbage collector while
            :meth:`App.run_worker` runs (allocations between collections of the youngest
            objects); Python's own is 700, and ``0`` leaves it as it is.
        storage: JetStream storage, ``"file"`` or ``"memory"``.
        codec: a PayloadCodec, a codec class, an import path, or ``None``; see
            :meth:`load_codec`.
        default_activity_timeout: start-to-close seconds when an activity sets none.
        history_retention: seconds a finished workflow's history and status record are kept
            after it ended (the server removes them then; running workflows are never
            touched), and dead letters after they were filed; ``0`` keeps them for ever.
        schedules: schedules by id, each a dict of :class:`~dfcore.ScheduleSpec` fields
            (``workflow``, ``cron`` or ``every``, ``timezone``, ``args``, ``task_queue``,
            ``overlap``, ``catch_up``), or that as JSON (``DF_SCHEDULES``); workers create
            and update them at start-up (docs/schedules.md).
        nats_token: token for servers with ``authorization { token: ... }`` (secret).
        nats_user: user name for user/password authentication; needs :attr:`nats_password`.
        nats_password: the user's password (secret).
        nats_nkey_seed: a user NKey seed, the value itself (secret); for a seed kept in a
            file use :attr:`nats_nkey_seed_file` instead.
        nats_nkey_seed_file: path of a file holding a user NKey seed.
        nats_creds_file: path of a ``.creds`` file (user JWT and NKey seed), for servers in
            operator (JWT) mode.
        nats_tls_ca_file: PEM CA certificates to verify the server with; ``None``: the
            system trust store. Setting it requires TLS.
        nats_tls_cert_file: PEM client certificate, for servers that verify clients; needs
            :attr:`nats_tls_key_file`. Setting it requires TLS.
        nats_tls_key_file: the client certificate's private key (PEM, unencrypted).
        nats_tls_hostname: the name the server's certificate must carry, when it is not the
            host in the URL (an IP address, or a name behind a load balancer).
        sources: where each non-default value was written (for error messages).
        advice: the commands and setting names messages suggest (the framework's).

    The repr shows secrets as ``***``; see :attr:`display_url` for logging the URL.
    """

    nats_url: str = "nats://127.0.0.1:4222"
    namespace: str = "df"
    task_queue: str = "default"
    connect_timeout: float = 5.0
    activity_concurrency: int = 64
    workflow_concurrency: int = 256
    workflow_cache_size: int = 1000
    activity_ack_wait: float = 30.0
    workflow_ack_wait: float = 10.0
    stream_replicas: int = 1
    worker_event_loop: str = "auto"
    worker_gc_threshold: int = 20000
    storage: str = "file"
    codec: object | None = None
    default_activity_timeout: float = 300.0
    history_retention: float = 7 * 24 * 3600.0
    schedules: tuple[ScheduleSpec, ...] = ()
    nats_token: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_nkey_seed: str | None = None
    nats_nkey_seed_file: str | None = None
    nats_creds_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    nats_tls_hostname: str | None = None
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    advice: Advice = dataclasses.field(default_factory=Advice, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in PARSERS:
            label = self.sources.get(name, f"Settings.{name}")
            object.__setattr__(self, name, parse(name, getattr(self, name), label))
        check_security(self)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={self._shown(name)!r}" for name in SETTING_NAMES)
        return f"Settings({shown})"

    def _shown(self, name: str) -> object:
        if name == "nats_url":
            return self.display_url
        value = getattr(self, name)
        return MASK if name in SECRETS and value is not None else value

    @property
    def servers(self) -> list[str]:
        """The server URLs of :attr:`nats_url` as a list."""
        return self.nats_url.split(",")

    @property
    def display_url(self) -> str:
        """:attr:`nats_url` with passwords and tokens replaced by ``***``: the form to log or
        put in a message."""
        return mask_url(self.nats_url)

    @property
    def tls_required(self) -> bool:
        """Whether every connection must use TLS: a URL is ``tls://`` or ``wss://``, or a CA
        or client certificate file is set."""
        schemes = {url.partition("://")[0].lower() for url in self.servers}
        files = (self.nats_tls_ca_file, self.nats_tls_cert_file)
        return bool(schemes & {"tls", "wss"}) or any(path is not None for path in files)

    def label(self, name: str) -> str:
        """Setting ``name`` as the user wrote it (``environment variable DF_NATS_USER``), for
        messages; the bare name when it was not set."""
        return self.sources.get(name, name)

    def load_codec(self) -> PayloadCodec | None:
        """Import and instantiate :attr:`codec` (see :func:`load_codec`)."""
        return load_codec(self.codec, self.sources.get("codec", "codec"))

    @classmethod
    def from_environment(cls, **settings: Any) -> Settings:
        """Settings from keyword arguments, then ``DF_*`` environment variables, then defaults
        (what an App has before any config object is read).

        Raises:
            ConfigurationError: an unknown setting name or an invalid value.
        """
        return resolve_settings(kwargs=settings, environ=os.environ)

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every setting's name, for integrations that read settings from their own place."""
        return SETTING_NAMES


SETTING_NAMES: tuple[str, ...] = tuple(PARSERS)


def resolve_settings(
    *,
    kwargs: Mapping[str, Any],
    from_object: Mapping[str, Any] | None = None,
    environ: Mapping[str, str],
    advice: Advice | None = None,
) -> Settings:
    """Build :class:`Settings` from keyword arguments, a config object and the environment.

    Args:
        kwargs: settings passed as keyword arguments; ``None`` values count as unset.
        from_object: setting name -> value, usually from :func:`read_config_object` (whose
            :class:`SourcedValue` entries carry the key as written).
        environ: the environment, usually ``os.environ``.
        advice: what messages suggest (default: the core's commands and names).

    Raises:
        ConfigurationError: an unknown setting name or an invalid value.
    """
    _reject_unknown(kwargs, "argument")
    _reject_unknown(from_object or {}, "config object setting")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in SETTING_NAMES:
        found = _lookup(name, kwargs, from_object or {}, environ)
        if found is not None:
            sources[name] = found.label
            values[name] = parse(name, found.value, found.label)
    return Settings(**values, sources=sources, advice=advice or Advice())


def _lookup(
    name: str, kwargs: Mapping[str, Any], obj: Mapping[str, Any], environ: Mapping[str, str]
) -> SourcedValue | None:
    if kwargs.get(name) is not None:
        return SourcedValue(f"argument {name}", kwargs[name])
    entry = obj.get(name)
    if entry is not None and not isinstance(entry, SourcedValue):
        entry = SourcedValue(f"config object setting {name}", entry)
    if entry is not None and entry.value is not None:
        return entry
    key = ENV_PREFIX + name.upper()
    if environ.get(key):
        return SourcedValue(f"environment variable {key}", environ[key])
    return None


def _reject_unknown(given: Mapping[str, Any], kind: str) -> None:
    for name in given:
        if name not in PARSERS:
            raise ConfigurationError(
                f"unknown {kind} {name!r}{_suggestion(name)}; "
                f"valid settings are: {', '.join(SETTING_NAMES)}"
            )


def _suggestion(name: str, candidates: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for a near miss; ``DF_NATS_URL`` suggests ``nats_url``."""
    candidates = candidates or {setting: setting for setting in SETTING_NAMES}
    plain = name.lower().removeprefix(ENV_PREFIX.lower())
    if plain in candidates and plain != name:
        return f" (did you mean {candidates[plain]!r}?)"
    for guess in (name, plain):
        close = difflib.get_close_matches(guess, list(candidates), n=1)
        if close:
            return f" (did you mean {candidates[close[0]]!r}?)"
    return ""


# --- config_from_object -----------------------------------------------------------------------

_MISSING = object()


def read_config_object(
    obj: object | str,
    namespace: str | None = "DF",
    *,
    strict: bool = False,
    source: str | None = None,
) -> dict[str, SourcedValue]:
    """Read settings from an object, as Celery's ``config_from_object`` does.

    With ``namespace="DF"`` the setting ``nats_url`` is read from ``DF_NATS_URL``; with a
    lower-case namespace from ``df_nats_url``; with ``None`` or ``""`` from ``nats_url`` or
    ``NATS_URL``.

    Args:
        obj: a module, a class, an instance, a mapping (Flask's ``app.config``), or an import
            path to a module or an object in one: ``"proj.settings"``,
            ``"proj.settings:Config"`` or ``"proj.settings.Config"``.
        namespace: the key prefix, without the trailing underscore.
        strict: raise on keys with the prefix that name no setting (typos); off by default
            because integrations keep their own ``DF_*`` keys next to the core's.
        source: how to name ``obj`` in error messages; derived from ``obj`` by default.

    Returns:
        Setting name -> :class:`SourcedValue`, for ``resolve_settings(from_object=...)``.

    Raises:
        ConfigurationError: the import path cannot be imported, or (``strict``) a key is
            unknown.
    """
    where = source or _describe(obj)
    target = import_object(obj, "config object") if isinstance(obj, str) else obj
    keys = _config_keys(namespace)
    get = _getter(target)
    found: dict[str, SourcedValue] = {}
    for key, name in keys.items():
        value = get(key)
        if value is not _MISSING:
            found[name] = SourcedValue(f"{key} in {where}", value)
    if strict and namespace:
        _reject_unknown_keys(target, keys, f"{namespace}_", where)
    return found


def _config_keys(namespace: str | None) -> dict[str, str]:
    if not namespace:
        return {key: name for name in SETTING_NAMES for key in (name, name.upper())}
    prefix = namespace.rstrip("_") + "_"
    upper = namespace.isupper()
    return {prefix + (name.upper() if upper else name): name for name in SETTING_NAMES}


def _getter(target: object) -> Callable[[str], Any]:
    if isinstance(target, Mapping):
        return lambda key: target.get(key, _MISSING)
    return lambda key: getattr(target, key, _MISSING)


def _reject_unknown_keys(target: object, keys: Mapping[str, str], prefix: str, where: str) -> None:
    present = target.keys() if isinstance(target, Mapping) else dir(target)
    for key in present:
        if isinstance(key, str) and key.startswith(prefix) and key not in keys:
            raise ConfigurationError(
                f"unknown setting {key!r} in {where}{_suggestion(key, {k: k for k in keys})}; "
                f"valid keys are: {', '.join(keys)}"
            )


def _describe(obj: object) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, Mapping):
        return "the config mapping"
    return f"the {type(obj).__name__} object"


def import_object(path: str, what: str, label: str | None = None) -> object:
    """Import a module or an object in one from ``"pkg.mod"``, ``"pkg.mod:Name"`` or
    ``"pkg.mod.Name"``.

    Args:
        path: the import path.
        what: what is imported, for the error message (``"codec"``).
        label: the setting that holds ``path``, for the error message.

    Raises:
        ConfigurationError: the import failed; the message names ``path`` and the cause.
    """
    try:
        return _import_path(path.strip())
    except Exception as exc:  # importing runs user code: any error is a configuration error
        prefix = f"{label} is invalid: " if label else ""
        raise ConfigurationError(
            f"{prefix}cannot import {what} {path!r}: {type(exc).__name__}: {exc}; "
            "expected an import path like 'package.module' or 'package.module:Name'"
        ) from exc


def _import_path(path: str) -> object:
    module_name, colon, attribute = path.partition(":")
    if colon:
        return _get_attribute(importlib.import_module(module_name), attribute)
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name != path or "." not in path:
            raise  # a missing package, or a failing import inside the module
    module_name, _, attribute = path.rpartition(".")
    return _get_attribute(importlib.import_module(module_name), attribute)


def _get_attribute(target: object, dotted: str) -> object:
    for part in dotted.split("."):
        target = getattr(target, part)
    return target


# --- codecs -----------------------------------------------------------------------------------


def load_codec(value: object, key: str = "codec") -> PayloadCodec | None:
    """Turn the ``codec`` setting into a codec instance.

    Args:
        value: ``None``, a codec instance, a codec class (instantiated with no arguments),
            or an import path to either (``"myproject.codecs:Fernet"``).
        key: the setting as the user wrote it, for error messages.

    Raises:
        ConfigurationError: the import fails, the class cannot be instantiated, or the
            object has no ``encode``/``decode`` methods.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = import_object(value, "codec", key)
    if isinstance(value, type):
        value = _instantiate_codec(value, key)
    if not has_codec_methods(value):
        raise ConfigurationError(
            f"{key} is invalid: {value!r} is not a payload codec; expected an object with "
            "encode(bytes) -> bytes and decode(bytes) -> bytes methods (a PayloadCodec)"
        )
    return cast(PayloadCodec, value)


def _instantiate_codec(cls: type, key: str) -> object:
    try:
        return cls()
    except Exception as exc:
        raise ConfigurationError(
            f"{key} is invalid: codec class {cls.__qualname__} could not be created without "
            f"arguments ({type(exc).__name__}: {exc}); pass an instance instead"
        ) from exc
