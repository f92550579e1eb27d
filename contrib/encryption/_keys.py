"""AES keys: parsing raw or base64 keys, key ids, and reading them from the environment.

No function here puts a key, or any part of one, into a message: errors name the setting
(``DF_ENCRYPTION_KEY``, ``old_keys[1]``) and the length, never the value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import string
from collections.abc import Iterable, Mapping

from dfcore import ConfigurationError

KEY_ENV = "DF_ENCRYPTION_KEY"
"""Environment variable holding the current key (base64), read when no key is passed."""

OLD_KEYS_ENV = "DF_ENCRYPTION_OLD_KEYS"
"""Environment variable holding former keys (base64, comma-separated), still accepted to read."""

KEY_SIZES = (16, 24, 32)
"""AES-128, AES-192 and AES-256 key sizes, in bytes."""

KEY_ID_SIZE = 4
"""Bytes of ``SHA-256(key)`` that identify a key in every message."""

GENERATE_COMMAND = (
    'python -c "from dfcore.contrib.encryption import AESGCMCodec; '
    'print(AESGCMCodec.generate_key())"'
)
"""A shell command that prints a new key."""

Key = bytes | bytearray | memoryview | str
"""A key as a user may give it: raw bytes, or the same base64-encoded."""

_HEX_LENGTHS = (32, 48, 64)


def new_key(size: int = 32) -> str:
    """A random key of ``size`` bytes, base64-encoded.

    Raises:
        ConfigurationError: ``size`` is not 16, 24 or 32.
    """
    if size not in KEY_SIZES:
        raise ConfigurationError(f"an AES key must be 16, 24 or 32 bytes, not {size}")
    return base64.b64encode(os.urandom(size)).decode("ascii")


def key_id(key: bytes) -> bytes:
    """The first :data:`KEY_ID_SIZE` bytes of ``SHA-256(key)``: names a key without revealing it."""
    return hashlib.sha256(key).digest()[:KEY_ID_SIZE]


def parse_key(value: Key, label: str) -> bytes:
    """Raw key bytes from raw bytes or a base64 string.

    Args:
        value: 16, 24 or 32 raw bytes, or the same base64-encoded (standard or URL-safe
            alphabet, padding optional).
        label: the setting that holds the key, for error messages (``"DF_ENCRYPTION_KEY"``).

    Raises:
        ConfigurationError: the key is not base64 or not 16, 24 or 32 bytes long; the message
            names ``label`` and never contains the key.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        raw, source = bytes(value), ""
    elif isinstance(value, str):
        raw, source = _from_base64(value.strip(), label), " once base64-decoded"
    else:
        raise ConfigurationError(
            f"{label} must be bytes or a base64 string, not {type(value).__name__}; "
            f"generate a key with: {GENERATE_COMMAND}"
        )
    if len(raw) not in KEY_SIZES:
        raise ConfigurationError(
            f"{label} is {len(raw)} bytes long{source}; an AES key must be 16, 24 or 32 bytes "
            f"(32 recommended), base64-encoded in a string; generate one with: {GENERATE_COMMAND}"
        )
    return raw


def _from_base64(text: str, label: str) -> bytes:
    if not text:
        raise ConfigurationError(f"{label} is empty; generate a key with: {GENERATE_COMMAND}")
    if len(text) in _HEX_LENGTHS and all(char in string.hexdigits for char in text):
        raise ConfigurationError(
            f"{label} looks like a hex string; the key must be base64-encoded: convert it with "
            "base64.b64encode(bytes.fromhex(hex_key)).decode(), or generate a new key with: "
            f"{GENERATE_COMMAND}"
        )
    standard = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        raise ConfigurationError(
            f"{label} is not valid base64 ({len(text)} characters); the key must be 16, 24 or "
            f"32 random bytes, base64-encoded; generate one with: {GENERATE_COMMAND}"
        ) from None


def parse_keys(values: Iterable[Key], label: str) -> list[bytes]:
    """:func:`parse_key` for each of ``values``, labelled ``label[0]``, ``label[1]``..."""
    return [parse_key(value, f"{label}[{i}]") for i, value in enumerate(values)]


def keys_from_environment(environ: Mapping[str, str]) -> tuple[bytes, list[bytes]]:
    """The current key from :data:`KEY_ENV` and former keys from :data:`OLD_KEYS_ENV`.

    Raises:
        ConfigurationError: :data:`KEY_ENV` is unset or empty, or a key is invalid.
    """
    current = environ.get(KEY_ENV, "").strip()
    if not current:
        raise ConfigurationError(
            f"no encryption key: set the environment variable {KEY_ENV} to a base64 key "
            f"(the same in every client and worker), or pass AESGCMCodec(key=...); generate a "
            f"key with: {GENERATE_COMMAND}"
        )
    old = [item.strip() for item in environ.get(OLD_KEYS_ENV, "").split(",")]
    return parse_key(current, KEY_ENV), [
        parse_key(item, f"{OLD_KEYS_ENV} item {i}") for i, item in enumerate(old, 1) if item
    ]
