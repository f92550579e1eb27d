"""Who may use the dashboard, and how its writes are kept from other sites (CSRF).

Three ways, from the settings (see :class:`DashboardSettings`):

- **basic**: a user name and password, asked by the browser (``WWW-Authenticate: Basic``);
- **token**: ``Authorization: Bearer <token>`` for scripts; a browser opens
  ``/login?token=...`` (or types the token into the login page) once and gets a session
  cookie (``HttpOnly``, ``SameSite=Strict``) holding a keyed hash of the token, never the
  token itself;
- **none**: no authentication, for local development only: refused unless the dashboard
  listens on a loopback address.

Writes from a browser carry its credentials by themselves (a basic-auth header, a cookie), so
each ``POST`` must also send ``X-CSRF-Token`` with the token from ``GET /api/session``; a page
of another site can neither read that token nor send the header without a CORS preflight,
which the dashboard never answers. A request whose ``Origin`` is not the dashboard's own is
refused too. Scripts that send a bearer token need no CSRF token: nothing sends it for them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from dfcore import ConfigurationError

AUTH_MODES = ("basic", "token", "none")
COOKIE = "df_dashboard"


@dataclass(frozen=True)
class DashboardSettings:
    """How the dashboard is served and who may use it.

    Each field can come from the environment (``DF_DASHBOARD_<FIELD>``), from the framework's
    settings (Django: ``DFCORE["DASHBOARD"] = {"USER": ..., ...}``; Flask:
    ``DF_DASHBOARD_USER`` ...) or from the command's options, which win.

    Attributes:
        auth: ``"basic"``, ``"token"`` or ``"none"``; default: ``basic`` when a user is set,
            else ``token`` when a token is set.
        user, password: the basic-auth credentials.
        token: the bearer token.
        read_only: hide every action; the API refuses writes with 403.
        host: the address to listen on (127.0.0.1: only this machine).
        port: the port (8070).
    """

    auth: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    read_only: bool = False
    host: str = "127.0.0.1"
    port: int = 8070

    @classmethod
    def resolve(
        cls, options: Mapping[str, object], framework: Mapping[str, object] | None = None
    ) -> DashboardSettings:
        """Settings from command options (None: not given), then the framework's settings,
        then the environment; checked.

        Raises:
            ConfigurationError: nothing says who may log in, or they disagree.
        """
        values: dict[str, object] = {}
        for name in cls.__dataclass_fields__:
            for source in (options, framework or {}, _environment()):
                value = source.get(name)
                if value is not None and value != "":
                    values[name] = value
                    break
        if isinstance(values.get("read_only"), str):
            values["read_only"] = str(values["read_only"]).lower() in ("1", "true", "yes", "on")
        if "port" in values:
            values["port"] = int(str(values["port"]))
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    @property
    def mode(self) -> str:
        if self.auth:
            return self.auth
        if self.user:
            return "basic"
        return "token" if self.token else "unset"

    def check(self) -> None:
        mode = self.mode
        if mode == "unset":
            raise ConfigurationError(
                "the dashboard needs to know who may use it: set DF_DASHBOARD_USER and "
                "DF_DASHBOARD_PASSWORD (basic auth) or DF_DASHBOARD_TOKEN (Django: "
                'DFCORE["DASHBOARD"] = {"USER": ..., "PASSWORD": ...}; Flask: '
                "DF_DASHBOARD_USER ...), or pass --no-auth to run it without authentication on "
                "this machine only (local development)"
            )
        if mode not in AUTH_MODES:
            raise ConfigurationError(f"dashboard auth {mode!r}: choose one of {AUTH_MODES}")
        if mode == "basic" and not (self.user and self.password):
            raise ConfigurationError(
                "dashboard basic auth needs both DF_DASHBOARD_USER and DF_DASHBOARD_PASSWORD"
            )
        if mode == "token" and not self.token:
            raise ConfigurationError("dashboard token auth needs DF_DASHBOARD_TOKEN")
        if mode == "none" and not is_loopback(self.host):
            raise ConfigurationError(
                f"the dashboard would serve {self.host} without authentication: --no-auth is "
                "for local development, on 127.0.0.1 only. Set DF_DASHBOARD_USER and "
                "DF_DASHBOARD_PASSWORD (or DF_DASHBOARD_TOKEN) to serve other machines"
            )


def _environment() -> dict[str, str]:
    prefix = "DF_DASHBOARD_"
    return {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Checks each request's credentials and each write's CSRF token."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._secret = secrets.token_bytes(32)  # this process's; sessions end with it
        self.csrf_token = secrets.token_urlsafe(24)

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        """How the request is authenticated (``"basic"``, ``"bearer"``, ``"cookie"``,
        ``"none"``), or None when it is not."""
        mode = self.settings.mode
        if mode == "none":
            return "none"
        authorization = headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if mode == "basic" and scheme.lower() == "basic" and self._basic_ok(credentials):
            return "basic"
        if mode == "token":
            if scheme.lower() == "bearer" and self.token_ok(credentials.strip()):
                return "bearer"
            if hmac.compare_digest(cookies.get(COOKIE, ""), self.session_value()):
                return "cookie"
        return None

    def _basic_ok(self, credentials: str) -> bool:
        try:
            user, _, password = base64.b64decode(credentials).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        good_user = hmac.compare_digest(user.encode(), (self.settings.user or "").encode())
        good_pass = hmac.compare_digest(password.encode(), (self.settings.password or "").encode())
        return good_user and good_pass

    def token_ok(self, token: str) -> bool:
        return bool(self.settings.token) and hmac.compare_digest(
            token.encode(), (self.settings.token or "").encode()
        )

    def session_value(self) -> str:
        """The session cookie's value: a keyed hash of the token, never the token."""
        digest = hmac.new(self._secret, (self.settings.token or "").encode(), hashlib.sha256)
        return digest.hexdigest()

    def write_allowed(self, how: str, headers: Mapping[str, str], own_origin: str) -> str | None:
        """Why a write must be refused (None: it may go on)."""
        if self.settings.read_only:
            return "the dashboard is read-only (--read-only)"
        origin = headers.get("Origin")
        if origin is not None and origin != own_origin:
            return f"a write from another origin ({origin}) is refused"
        if how == "bearer":
            return None
        sent = headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token.encode()):
            return "missing or wrong X-CSRF-Token header (GET /api/session gives it)"
        return None
