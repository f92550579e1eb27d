"""NATS authentication and TLS settings: their parsers, the checks across them, and masking.

:mod:`dfcore.core._config` owns the settings; this module holds what is particular to the secret
and file-based ones (see the table in :mod:`dfcore.core._config`): values that must never be shown,
files that are read to catch mistakes early, and methods that exclude each other.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
from collections.abc import Callable
from typing import Any, Protocol

from dfcore.core._errors import ConfigurationError

__all__ = ["MASK", "PARSERS", "SECRETS", "check_security", "has_userinfo", "mask_url"]

_Parser = Callable[[Any], Any]


class Settings(Protocol):
    """What the checks read of :class:`dfcore.Settings` (which imports this module)."""

    @property
    def nats_url(self) -> str: ...

    @property
    def nats_nkey_seed(self) -> str | None: ...

    @property
    def nats_nkey_seed_file(self) -> str | None: ...

    @property
    def nats_creds_file(self) -> str | None: ...

    @property
    def servers(self) -> list[str]: ...

    def label(self, name: str) -> str: ...


SECRETS = frozenset({"nats_token", "nats_password", "nats_nkey_seed"})
MASK = "***"
_SEED = re.compile(r"S[A-Z2-7]{57}")
_SEED_EXPECTED = "a user NKey seed: 58 characters starting with 'SU', as `nk -gen user` prints it"
_SEED_KINDS = {"A": "an account", "O": "an operator", "N": "a server", "C": "a cluster"}


def mask_url(urls: str) -> str:
    """``urls`` (comma-separated) with the password of each ``user:password@``, or a bare
    token ``token@``, replaced by ``***``: the form for logs and messages."""
    return ",".join(_mask_one(url) for url in urls.split(","))


def _mask_one(url: str) -> str:
    # Up to the last "@", so a password holding an unescaped "@" is masked whole; a URL
    # without a scheme (a typo being reported) is masked too.
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{f'{user}:{MASK}' if colon else MASK}@{host}"


def has_userinfo(urls: str) -> bool:
    """Whether a URL in ``urls`` carries ``user:password@`` or a token."""
    return any("@" in url for url in urls.split(","))


def _text(expected: str) -> _Parser:
    def parse(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(expected)
        return value

    return parse


def _parse_hostname(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError("a host name such as 'nats.internal'")
    return value.strip()


def _parse_nkey_seed(value: Any) -> str | None:
    if value is None:
        return None
    seed = value.strip() if isinstance(value, str) else ""
    if _SEED.fullmatch(seed) and seed[1] == "U":
        return seed
    raise ValueError(_SEED_EXPECTED + _seed_hint(seed))


def _seed_hint(seed: str) -> str:
    """Why a value is not a user seed, without repeating it (it may be a secret)."""
    if _SEED.fullmatch(seed) and seed[1] in _SEED_KINDS:
        return f"; this is the seed of {_SEED_KINDS[seed[1]]}, not of a user"
    if re.fullmatch(r"U[A-Z2-7]{55}", seed):
        return "; this is a user's public key, give its seed (the secret half) instead"
    if "BEGIN NATS USER JWT" in seed:
        return "; this is a credentials file's content, use nats_creds_file with its path"
    if "/" in seed or os.sep in seed or seed.endswith((".nk", ".seed", ".creds")):
        return "; to read the seed from a file, use nats_nkey_seed_file"
    return ""


def _file(what: str) -> _Parser:
    def parse(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike) or not str(os.fspath(value)).strip():
            raise ValueError(f"the path of {what}")
        path = os.path.expanduser(str(os.fspath(value)).strip())
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ValueError(f"the path of {what}, but {_file_problem(path)}")
        return path

    return parse


def _file_problem(path: str) -> str:
    if os.path.isdir(path):
        problem = "it is a folder"
    elif os.path.exists(path):
        problem = "this process may not read it"
    else:
        problem = "there is no such file"
    if not os.path.isabs(path):
        problem += f" (relative to the current folder {os.getcwd()})"
    return problem


# Parsers of the settings in this module: raw value -> validated value, or
# ValueError("<what is expected>"), as in dfcore.core._config.
PARSERS: dict[str, _Parser] = {
    "nats_token": _text("a non-empty token"),
    "nats_user": _text("a non-empty user name"),
    "nats_password": _text("a non-empty password"),
    "nats_nkey_seed": _parse_nkey_seed,
    "nats_nkey_seed_file": _file("a file holding a user NKey seed"),
    "nats_creds_file": _file("a NATS credentials (.creds) file"),
    "nats_tls_ca_file": _file("a PEM file of CA certificates"),
    "nats_tls_cert_file": _file("a PEM client certificate file"),
    "nats_tls_key_file": _file("a PEM private key file"),
    "nats_tls_hostname": _parse_hostname,
}


_AUTH_METHODS: tuple[tuple[str, ...], ...] = (
    ("nats_token",),
    ("nats_user", "nats_password"),
    ("nats_nkey_seed",),
    ("nats_nkey_seed_file",),
    ("nats_creds_file",),
)
_ONE_METHOD = (
    "a connection authenticates one way: keep only a token (nats_token), a user and password "
    "(nats_user and nats_password, or in nats_url), an NKey seed (nats_nkey_seed or "
    "nats_nkey_seed_file) or a credentials file (nats_creds_file)"
)


def check_security(settings: Settings) -> None:
    """Check the authentication and TLS settings against each other and read their files.

    Raises:
        ConfigurationError: conflicting methods, half a pair, TLS files on a ``ws://`` URL,
            the ``nkeys`` package missing, or a seed or credentials file that is malformed.
    """
    _check_one_auth_method(settings)
    _check_pair(settings, "nats_user", "nats_password", "a user name needs its password")
    _check_pair(
        settings, "nats_tls_cert_file", "nats_tls_key_file", "a client certificate needs its key"
    )
    _check_tls_schemes(settings)
    _check_nkeys(settings)


def _check_one_auth_method(settings: Settings) -> None:
    used = [
        " and ".join(settings.label(name) for name in names if getattr(settings, name) is not None)
        for names in _AUTH_METHODS
        if any(getattr(settings, name) is not None for name in names)
    ]
    if has_userinfo(settings.nats_url):
        used.append(f"the credentials in {settings.label('nats_url')}")
    if len(used) > 1:
        both = "both" if len(used) == 2 else "all"
        raise ConfigurationError(
            f"conflicting NATS authentication settings: {', '.join(used[:-1])} and {used[-1]} "
            f"are {both} set, but {_ONE_METHOD}"
        )


def _check_pair(settings: Settings, first: str, second: str, why: str) -> None:
    if (getattr(settings, first) is None) == (getattr(settings, second) is None):
        return
    given, missing = (first, second) if getattr(settings, second) is None else (second, first)
    raise ConfigurationError(
        f"{settings.label(given)} is set but {missing} is not: {why}; set both, or neither"
    )


def _check_tls_schemes(settings: Settings) -> None:
    files = ("nats_tls_ca_file", "nats_tls_cert_file")
    tls_file = next((name for name in files if getattr(settings, name) is not None), None)
    if tls_file and any(url.lower().startswith("ws://") for url in settings.servers):
        raise ConfigurationError(
            f"{settings.label('nats_url')} is invalid with {settings.label(tls_file)}: a ws:// "
            "URL never uses TLS; use wss:// for WebSocket over TLS"
        )


def _check_nkeys(settings: Settings) -> None:
    names = ("nats_nkey_seed", "nats_nkey_seed_file", "nats_creds_file")
    name = next((name for name in names if getattr(settings, name) is not None), None)
    if name is None:
        return
    label = settings.label(name)
    nkeys = _import_nkeys(label)
    if name == "nats_nkey_seed":
        _check_seed(nkeys, settings.nats_nkey_seed or "", label)
    elif name == "nats_nkey_seed_file":
        path = settings.nats_nkey_seed_file or ""
        _check_seed_file(nkeys, path, _read_text(path, label), label)
    else:
        path = settings.nats_creds_file or ""
        _check_creds(nkeys, path, _read_text(path, label), label)


def _import_nkeys(label: str) -> Any:
    try:
        return importlib.import_module("nkeys")
    except ImportError:
        raise ConfigurationError(
            f"{label} needs the nkeys package, which is not installed; install it with "
            "`pip install 'durablefuture[nkeys]'`"
        ) from None


def _check_seed(nkeys: Any, seed: str, label: str, where: str = "") -> None:
    """Decode ``seed`` (its checksum catches typos); errors never show the seed."""
    try:
        if not _checksum_ok(nkeys, seed):
            raise ValueError("checksum")
        pair = nkeys.from_seed(bytearray(seed.encode()))
    except (nkeys.NkeysError, ValueError):
        raise ConfigurationError(
            f"{label} is invalid: {where or 'the value'} is not a valid NKey seed (its "
            "checksum or encoding is wrong; the value is a secret and not shown); expected "
            f"{_SEED_EXPECTED}"
        ) from None
    pair.wipe()


def _checksum_ok(nkeys: Any, seed: str) -> bool:
    """Whether the seed's CRC-16 matches (the nkeys package does not check it)."""
    raw = base64.b32decode(seed + "=" * (-len(seed) % 8))
    return bool(nkeys.crc16_checksum(raw[:-2]) == raw[-2:])


def _check_seed_file(nkeys: Any, path: str, text: str, label: str) -> None:
    try:
        seed = _parse_nkey_seed(text.strip()) or ""
    except ValueError as exc:
        raise ConfigurationError(f"{label} is invalid: {path} does not hold {exc}") from None
    _check_seed(nkeys, seed, label, f"the content of {path}")


def _check_creds(nkeys: Any, path: str, text: str, label: str) -> None:
    lines = [line.strip() for line in text.splitlines()]
    jwt, seed = _after(lines, "BEGIN NATS USER JWT"), _after(lines, "BEGIN USER NKEY SEED")
    if not jwt or not seed:
        hint = (
            " (it holds a bare seed: use nats_nkey_seed_file)"
            if _SEED.fullmatch(text.strip())
            else ""
        )
        raise ConfigurationError(
            f"{label} is invalid: {path} is not a NATS credentials file{hint}; expected the "
            "'-----BEGIN NATS USER JWT-----' and '-----BEGIN USER NKEY SEED-----' blocks "
            "that `nsc generate creds` writes"
        )
    _check_seed(nkeys, seed, label, f"the seed in {path}")


def _after(lines: list[str], marker: str) -> str:
    """The line after the one containing ``marker``, or ``""``."""
    for index, line in enumerate(lines[:-1]):
        if marker in line:
            return lines[index + 1]
    return ""


def _read_text(path: str, label: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{label} is invalid: cannot read {path}: {exc}") from None
