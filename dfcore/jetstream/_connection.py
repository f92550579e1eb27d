"""Connecting to NATS: fail fast with a clear message at start, reconnect forever afterwards.

Authentication and TLS come from the settings (see :mod:`dfcore.core._config`). A failed first
connect is diagnosed (credentials refused, a TLS problem, no server) into a message that names
the settings to check; no message or log line carries a secret, and URLs are shown through
:attr:`Settings.display_url`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from nats import errors as nats_errors
from nats.aio.client import Client as NATS

from dfcore.core._config import Settings
from dfcore.core._errors import ConfigurationError, DFConnectionError

log = logging.getLogger("dfcore.connection")


def _no_server_hint(settings: Settings) -> str:
    advice = settings.advice
    return (
        f"Start a server (for development, {advice.run('dev')} runs an embedded one and prints "
        f"its URL) or point {advice.name('nats_url')} at a running server."
    )


_AUTH_SETTINGS = (
    "nats_token, nats_user and nats_password, nats_nkey_seed (or nats_nkey_seed_file), or "
    "nats_creds_file (see docs/security.md)"
)


# The server's -ERR for a denied publish or subscription, as nats-py passes it to error_cb.
_PERMISSION_DENIED = re.compile(
    r"permissions violation for (publish|subscription) to \"?([^\"\s]+)", re.IGNORECASE
)


class _Client(NATS):
    """nats-py's client, reading the headers the server checks the way the server does.

    On publish the server checks the *first* copy of a ``Nats-Expected-*`` header and stores
    the message with every copy; nats-py's parse keeps the *last*. A publisher could repeat
    one, so that the server checks a true first copy while the reader takes a false last one
    for what was checked (a start taken for the first record of a history, a ``prev`` that
    skips records). Those headers are read from their first copy here.
    """

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        parsed: dict[str, str] | None = await super()._process_headers(headers)
        if parsed and _CHECKED_PREFIX in headers:
            parsed.update(_first_copies(headers))
        return parsed


_CHECKED_PREFIX = b"Nats-Expected-"


def _first_copies(raw: bytes) -> dict[str, str]:
    """The first value of each ``Nats-Expected-*`` header in a raw header block."""
    found: dict[str, str] = {}
    for line in raw.split(b"\r\n")[1:]:  # after the NATS/1.0 line
        name, sep, value = line.partition(b":")
        if sep and name.startswith(_CHECKED_PREFIX):
            key = name.strip().decode("ascii", "replace")
            found.setdefault(key, value.strip().decode("utf-8", "replace"))
    return found


class _NotEncrypted(nats_errors.Error):
    """Raised in place of a secret when the connection is not TLS but the settings require it."""

    def __str__(self) -> str:
        return "nats: the server does not offer TLS"


class Listener(Protocol):
    """What the owner of a connection is told about it (the Client, a Worker)."""

    def connection_lost(self) -> None:
        """The connection dropped; nats-py is reconnecting."""

    async def reconnected(self) -> None:
        """The connection is back (possibly to another server of the cluster)."""

    def refused(self, subject: str) -> None:
        """The server refused this connection permission to publish to ``subject``."""


async def connect(settings: Settings, name: str, listener: Listener | None = None) -> NATS:
    """Connect to the configured NATS server(s), authenticated and over TLS as configured.

    Each server of the list is tried in turn (twice over), so a cluster with a node down still
    connects; when none accepts a connection, that is known at once. A refused login or failed
    TLS handshake stops at once too, since another attempt cannot help. The whole of it takes
    at most ``settings.connect_timeout`` seconds: each server of the first pass gets an equal
    share of the time left, so a server that accepts the connection and never answers cannot
    take the other servers' turns. The client keeps the whole list for its reconnects.

    Raises:
        ConfigurationError: a TLS certificate, key or CA file cannot be loaded.
        DFConnectionError: no server answered, the server refused the credentials, the TLS
            handshake failed, or the settings require TLS and the server does not offer it;
            the message says which and what to check.
    """
    servers = list(settings.servers)
    if settings.tls_required:
        # Credentials in a URL would be sent by nats-py itself, even over a connection the
        # server left unencrypted: take them out, and hand them over through the TLS guard.
        servers = [_without_userinfo(url) for url in servers]
    random.shuffle(servers)  # spread clients over a cluster, as nats-py does by default
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout
    attempts = 2 * len(servers)
    for attempt in range(attempts):
        first = attempt % len(servers)
        # The first pass shares the time among the servers not tried yet; the second pass
        # (for servers that refused fast, as one restarting does) gets what is left.
        left = len(servers) - attempt if attempt < len(servers) else attempts - attempt
        share = (deadline - loop.time()) / left
        try:
            return await _connect_once(
                settings, name, servers[first:] + servers[:first], listener, share
            )
        except _Unreachable as exc:
            tried_all = isinstance(exc.__cause__, nats_errors.NoServersError)  # twice each
            if tried_all or attempt + 1 == attempts or deadline - loop.time() < _SHORTEST_ATTEMPT:
                raise exc.error from exc.__cause__
            log.debug("NATS at %s unreachable; trying the next server", servers[first])
    raise AssertionError("unreachable")  # the loop returns or raises


_SHORTEST_ATTEMPT = 0.01
"""Seconds: with less time left than this, another connect attempt is not worth starting."""


class _Unreachable(Exception):
    """A server did not answer (as opposed to refusing us): try the next one."""

    def __init__(self, error: DFConnectionError) -> None:
        self.error = error


async def _connect_once(
    settings: Settings,
    name: str,
    servers: list[str],
    listener: Listener | None,
    timeout: float,
) -> NATS:
    """One connect to ``servers[0]``, in at most ``timeout`` seconds; raise _Unreachable when
    it did not answer."""
    nc = _Client()
    errors: collections.deque[Exception] = collections.deque(maxlen=8)

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)
        refused = _PERMISSION_DENIED.search(str(exc))
        if refused is None:
            log.debug("NATS connection error: %r", exc)
            return
        action, subject = refused.group(1).lower(), refused.group(2)
        log.warning(
            "NATS refused this process (user %r) permission to %s %s: its NATS user lacks "
            'a permission its role needs; docs/security.md, "Permissions", lists them',
            settings.nats_user or "?",
            "publish to" if action == "publish" else "subscribe to",
            subject,
        )
        if action == "publish" and listener is not None:
            listener.refused(subject)

    async def disconnected_cb() -> None:
        if nc.is_closed or nc.is_draining:
            return  # a deliberate close, not an outage
        log.warning("disconnected from NATS at %s; reconnecting", settings.display_url)
        if listener is not None:
            listener.connection_lost()

    async def reconnected_cb() -> None:
        log.warning("reconnected to NATS")
        if listener is not None:
            await listener.reconnected()

    options = {**_auth_options(settings, nc), **_tls_options(settings)}
    try:
        # nats-py applies its connect_timeout to each step of the handshake (TCP, INFO, PONG)
        # in turn; the outer timeout bounds them together.
        async with asyncio.timeout(timeout):
            await nc.connect(
                servers=servers,
                name=name,
                connect_timeout=timeout,  # type: ignore[arg-type]  # float works
                # Fail on the first refused handshake: retrying wrong credentials cannot help,
                # and after a failed TLS handshake nats-py's reconnect path hangs for ever on the
                # dead socket (nats-io/nats.py#718). The caller tries the other servers itself.
                allow_reconnect=False,
                dont_randomize=True,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,  # type: ignore[arg-type]  # before a server's 2nd try
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                pending_size=8 * 1024 * 1024,
                **options,
            )
    except asyncio.CancelledError:
        await _discard(nc, None)  # the caller gave up: leave no socket behind
        raise
    except Exception as exc:
        await _discard(nc, exc)
        error = _connect_error(settings, nc, [*errors, exc])
        if _is_unreachable(exc):
            raise _Unreachable(error) from exc
        raise error from exc
    if not nc.is_connected:  # nats-py returns when the server hung up instead of answering PING
        await _discard(nc, None)
        raise _connect_error(settings, nc, [*errors, nats_errors.UnexpectedEOF()])
    if settings.tls_required and not _encrypted(nc):
        await close_connection(nc)
        raise DFConnectionError(
            f"could not connect to NATS at {settings.display_url}: "
            + _unencrypted_message(settings, sent_secret=False)
        )
    # Connected: from now on never give up on the server (workers must survive its restarts).
    nc.options["allow_reconnect"] = True
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    return nc


def is_unreachable(error: BaseException) -> bool:
    """Whether a connect error means that no server answered (worth trying again later), as
    opposed to one that refused the credentials or the TLS handshake."""
    cause = error.__cause__
    return isinstance(cause, Exception) and _is_unreachable(cause)


def _is_unreachable(exc: Exception) -> bool:
    """Nobody answered (refused, timed out, no route): not a TLS or authentication problem."""
    if isinstance(exc, ssl.SSLError) or _is_auth_error(exc):
        return False
    return isinstance(
        exc, OSError | asyncio.TimeoutError | nats_errors.NoServersError | nats_errors.TimeoutError
    )


async def close_connection(nc: NATS) -> None:
    """Drain (finish in-flight work) when connected, else just close; never raise."""
    try:
        if nc.is_connected:
            await nc.drain()
            return
    except Exception as exc:
        log.debug("drain failed (%r); closing", exc)
    try:
        await nc.close()
    except Exception as exc:
        log.debug("close failed: %r", exc)


# --- options ----------------------------------------------------------------------------------


def _auth_options(settings: Settings, nc: NATS) -> dict[str, Any]:
    """``nats.connect`` options of the one configured authentication method (none: ``{}``,
    and credentials in the URL are used by nats-py itself)."""

    def guarded(secret: str) -> Callable[[], str]:
        # nats-py asks for the secret while writing CONNECT, after any TLS upgrade: the last
        # moment to refuse sending it in plain text.
        def give() -> str:
            if settings.tls_required and not _encrypted(nc):
                raise _NotEncrypted
            return secret

        return give

    if settings.nats_token is not None:
        return {"token": guarded(settings.nats_token)}
    if settings.nats_user is not None and settings.nats_password is not None:
        return {"user": settings.nats_user, "password": guarded(settings.nats_password)}
    if settings.nats_nkey_seed is not None:
        return {"nkeys_seed_str": settings.nats_nkey_seed}
    if settings.nats_nkey_seed_file is not None:
        return {"nkeys_seed": settings.nats_nkey_seed_file}
    if settings.nats_creds_file is not None:
        return {"user_credentials": settings.nats_creds_file}
    if settings.tls_required:
        return _url_credentials(settings, guarded)
    return {}


def _url_credentials(
    settings: Settings, guarded: Callable[[str], Callable[[], str]]
) -> dict[str, Any]:
    """The ``user:password@`` or ``token@`` of the first URL that has one, guarded."""
    for url in settings.servers:
        parts = urlsplit(url)
        if parts.username is None:
            continue
        if parts.password is not None:
            return {"user": parts.username, "password": guarded(parts.password)}
        return {"token": guarded(parts.username)}
    return {}


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _tls_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.tls_required:
        options["tls"] = tls_context(settings)
    if settings.nats_tls_hostname is not None:
        options["tls_hostname"] = settings.nats_tls_hostname
    return options


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The client's TLS context: verify the server against ``nats_tls_ca_file`` (else the
    system trust store) and present ``nats_tls_cert_file`` when set.

    Raises:
        ConfigurationError: a file is not PEM, the key does not match the certificate, or
            the key is encrypted; the message names the setting.
    """
    ca_file = settings.nats_tls_ca_file
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"{settings.label('nats_tls_ca_file')} is invalid: cannot load CA certificates "
            f"from {ca_file} ({exc}); expected PEM certificates (-----BEGIN CERTIFICATE-----)"
        ) from None
    if settings.nats_tls_cert_file is not None and settings.nats_tls_key_file is not None:
        _load_client_certificate(settings, context)
    return context


def _load_client_certificate(settings: Settings, context: ssl.SSLContext) -> None:
    cert, key = settings.label("nats_tls_cert_file"), settings.label("nats_tls_key_file")

    def no_password() -> str:
        # Without a callback OpenSSL would prompt on the terminal and block the worker.
        raise ConfigurationError(
            f"{key} is invalid: the private key is encrypted; store it unencrypted with "
            "restricted permissions (e.g. `openssl pkey -in key.pem -out plain.pem`)"
        )

    try:
        context.load_cert_chain(
            settings.nats_tls_cert_file or "", settings.nats_tls_key_file, password=no_password
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"{cert} or {key} is invalid: cannot load the client certificate ({exc}); expected "
            "a PEM certificate and the PEM private key that belongs to it"
        ) from None


# --- diagnosis --------------------------------------------------------------------------------


def _encrypted(nc: NATS) -> bool:
    # nats-py has no public flag for this; it upgrades to TLS exactly when the server's INFO
    # says tls_required, and a wss:// connection is TLS from the start.
    server = nc._current_server
    wss = server is not None and server.uri.scheme == "wss"
    return wss or bool(nc._server_info.get("tls_required"))


async def _discard(nc: NATS, exc: Exception | None) -> None:
    """Release what a failed connect left open."""
    if isinstance(exc, ssl.SSLError):
        return  # asyncio already closed the socket, and nats-py's close would wait for ever
    try:
        await asyncio.wait_for(nc.close(), timeout=1.0)
    except Exception as close_exc:
        log.debug("closing after a failed connect failed: %r", close_exc)


def _connect_error(settings: Settings, nc: NATS, errors: list[Exception]) -> DFConnectionError:
    where = f"could not connect to NATS at {settings.display_url}"
    if any(isinstance(error, _NotEncrypted) for error in errors):
        return DFConnectionError(f"{where}: {_unencrypted_message(settings, sent_secret=True)}")
    refused = next((error for error in errors if _is_auth_error(error)), None)
    if refused is not None:
        return DFConnectionError(f"{where}: {_refused_message(settings, refused)}")
    tls = _tls_failure(settings, nc, errors)
    if tls is not None:
        return DFConnectionError(f"{where}: TLS handshake failed: {tls}")
    cause = errors[-1]
    if isinstance(cause, TimeoutError):
        return DFConnectionError(
            f"{where}: no answer within {settings.connect_timeout}s (the connect_timeout). "
            f"{_no_server_hint(settings)}"
        )
    return DFConnectionError(
        f"{where} ({type(cause).__name__}: {cause}). {_no_server_hint(settings)}"
    )


def _is_auth_error(error: Exception) -> bool:
    # The server answers -ERR 'Authorization Violation', 'User Authentication Expired', ...
    text = str(error).lower()
    return isinstance(error, nats_errors.AuthorizationError) or (
        isinstance(error, nats_errors.Error)
        and ("authorization" in text or "authentication" in text)
    )


def _refused_message(settings: Settings, error: Exception) -> str:
    configured = _configured_credentials(settings)
    if configured is None:
        return (
            f"the server requires authentication ({error}) and no credentials are configured; "
            f"set {_AUTH_SETTINGS}"
        )
    return f"the server refused the credentials ({error}): check {configured}"


def _configured_credentials(settings: Settings) -> str | None:
    """The settings holding the credentials that were sent, as the user wrote them."""
    label = settings.label
    if settings.nats_token is not None:
        return label("nats_token")
    if settings.nats_user is not None:
        return f"{label('nats_user')} and {label('nats_password')}"
    for name in ("nats_nkey_seed", "nats_nkey_seed_file"):
        if getattr(settings, name) is not None:
            return f"{label(name)} (the server must list the user's public key)"
    if settings.nats_creds_file is not None:
        return (
            f"{label('nats_creds_file')} (its user must belong to an account the server's "
            "operator trusts, and must not be expired or revoked)"
        )
    if "@" in settings.nats_url:
        return f"the user and password in {label('nats_url')}"
    return None


def _tls_failure(settings: Settings, nc: NATS, errors: list[Exception]) -> str | None:
    """What went wrong with TLS, or None when TLS is not the problem."""
    for error in errors:
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"the server's certificate was rejected ({error.verify_message}); " + (
                _certificate_hint(settings, str(error.verify_message))
            )
    closed = (ssl.SSLError, ConnectionResetError, BrokenPipeError, nats_errors.UnexpectedEOF)
    lost = next((error for error in errors if isinstance(error, closed)), None)
    if lost is None or not (settings.tls_required or nc._server_info.get("tls_required")):
        return None
    return f"the server closed the connection ({lost}); {_client_cert_hint(settings)}"


def _certificate_hint(settings: Settings, reason: str) -> str:
    if "mismatch" in reason.lower():
        return (
            f"set {settings.label('nats_tls_hostname')} to a name the certificate carries, or "
            "connect to the server by that name"
        )
    trusted = settings.nats_tls_ca_file or "the system trust store"
    return (
        f"set {settings.label('nats_tls_ca_file')} to the CA certificate that signed it "
        f"(now trusted: {trusted})"
    )


def _client_cert_hint(settings: Settings) -> str:
    cert, key = settings.label("nats_tls_cert_file"), settings.label("nats_tls_key_file")
    if settings.nats_tls_cert_file is None:
        return (
            "the server probably requires a client certificate (verify: true): set "
            f"{cert} and {key}"
        )
    return (
        f"the server probably rejected the client certificate: check that {cert} was signed "
        "by a CA in the server's tls.ca_file and is valid for client authentication"
    )


def _unencrypted_message(settings: Settings, *, sent_secret: bool) -> str:
    files = ("nats_tls_ca_file", "nats_tls_cert_file")
    name = next((name for name in files if getattr(settings, name) is not None), None)
    why = settings.label(name) if name else f"the tls:// URL in {settings.label('nats_url')}"
    what = "no credentials were sent" if sent_secret else "the connection was closed"
    return (
        f"the server does not offer TLS, but {why} requires it, so {what}. Enable TLS on the "
        "server (a tls { cert_file, key_file } block in its config), or, on a trusted "
        f"network only, drop {why}"
    )
