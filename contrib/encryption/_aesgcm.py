"""The AES-GCM payload codec; the wire format is described in the package docstring."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dfcore import (
    CodecKeyError,
    CodecUnavailableError,
    ConfigurationError,
    PayloadCodec,
    PayloadError,
)

from ._keys import (
    KEY_ENV,
    KEY_ID_SIZE,
    OLD_KEYS_ENV,
    Key,
    key_id,
    keys_from_environment,
    new_key,
    parse_key,
    parse_keys,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"DFE"
"""First bytes of every encrypted body (JSON bodies start with ``{``)."""

VERSION = 1
"""The format version this codec writes and reads."""

NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 1 + KEY_ID_SIZE
"""Magic, version and key id; authenticated as associated data."""

OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
"""Bytes an encrypted body is longer than the JSON it carries."""

_KEY_HINT = (
    f"every client and worker must share the key ({KEY_ENV}); keep old keys in old_keys "
    f"({OLD_KEYS_ENV}) during a rotation"
)


class DecryptionError(PayloadError):
    """A body is not in the AES-GCM codec's format, or fails authentication: it is corrupt,
    forged, or was written without this codec. (A body encrypted with a key this process does
    not have raises :class:`dfcore.CodecKeyError` instead.)"""


def _load_cryptography() -> tuple[type[AESGCM], type[Exception]]:
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigurationError(
            "dfcore.contrib.encryption needs the cryptography package: "
            'pip install "durablefuture[crypto]"'
        ) from exc
    return AESGCM, InvalidTag


class AESGCMCodec(PayloadCodec):
    """Encrypts every message body with AES-GCM; a fresh random nonce per message.

    Bodies are encrypted with ``key``; they are decrypted with whichever of ``key`` and
    ``old_keys`` they were encrypted with, so keys can be rotated without downtime.

    Args:
        key: 16, 24 or 32 raw bytes, or the same base64-encoded as a string. ``None`` reads it
            from the environment variable ``DF_ENCRYPTION_KEY``, and then (unless ``old_keys``
            is given) the former keys from ``DF_ENCRYPTION_OLD_KEYS``, comma-separated.
        old_keys: former keys, still accepted for reading.

    Raises:
        ConfigurationError: a key is missing or invalid (the message never contains a key),
            or the ``cryptography`` package is not installed.

    Example:
        >>> codec = AESGCMCodec(AESGCMCodec.generate_key())
        >>> codec.decode(codec.encode(b'{"card": "4242"}'))
        b'{"card": "4242"}'
    """

    def __init__(self, key: Key | None = None, *, old_keys: Iterable[Key] = ()) -> None:
        aesgcm, self._invalid_tag = _load_cryptography()
        current, former = _resolve_keys(key, old_keys)
        self._key_id = key_id(current)
        self._cipher = aesgcm(current)
        self._ciphers: dict[bytes, list[AESGCM]] = {}
        for raw in dict.fromkeys([current, *former]):  # de-duplicated, current first
            self._ciphers.setdefault(key_id(raw), []).append(aesgcm(raw))

    @staticmethod
    def generate_key(size: int = 32) -> str:
        """A new random key, base64-encoded, for ``DF_ENCRYPTION_KEY``.

        Args:
            size: the key size in bytes: 16, 24 or 32 (AES-128, -192, -256).

        Raises:
            ConfigurationError: ``size`` is not 16, 24 or 32.
        """
        return new_key(size)

    @property
    def key_id(self) -> str:
        """The id of the key new messages are encrypted with (8 hex digits)."""
        return self._key_id.hex()

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key this codec decrypts with, the current one first."""
        return tuple(kid.hex() for kid in self._ciphers)

    def __repr__(self) -> str:
        old = [kid for kid in self.key_ids if kid != self.key_id]
        return f"{type(self).__name__}(key_id={self.key_id!r}, old_key_ids={old!r})"

    def encode(self, data: bytes) -> bytes:
        """Encrypt ``data`` with the current key and a fresh random nonce.

        Args:
            data: the JSON bytes.

        Returns:
            ``header + nonce + ciphertext + tag``; see the package docstring.
        """
        header = MAGIC + bytes([VERSION]) + self._key_id
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + self._cipher.encrypt(nonce, data, header)

    def decode(self, data: bytes) -> bytes:
        """Decrypt ``data`` with the key it names.

        Args:
            data: a body written by :meth:`encode` (with this or an old key).

        Returns:
            The original JSON bytes.

        Raises:
            CodecKeyError: ``data`` was encrypted with a key this codec does not have.
            DecryptionError: ``data`` is not in this format, or fails authentication.
        """
        header = _check_header(data)
        ciphers = self._ciphers.get(header[-KEY_ID_SIZE:])
        if not ciphers:
            raise CodecKeyError(header[-KEY_ID_SIZE:].hex(), self.key_ids, hint=_KEY_HINT)
        nonce = data[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        sealed = data[HEADER_SIZE + NONCE_SIZE :]
        for cipher in ciphers:
            try:
                return cipher.decrypt(nonce, sealed, header)
            except self._invalid_tag:
                continue
        raise DecryptionError(
            f"authentication failed with key id {header[-KEY_ID_SIZE:].hex()}: the message was "
            "corrupted or tampered with, and was not decrypted"
        )


def _resolve_keys(key: Key | None, old_keys: Iterable[Key]) -> tuple[bytes, list[bytes]]:
    """The current key and the former ones, from the arguments or else the environment."""
    old_keys = list(old_keys)
    if key is not None:
        return parse_key(key, "key"), parse_keys(old_keys, "old_keys")
    current, former = keys_from_environment(os.environ)
    return current, parse_keys(old_keys, "old_keys") if old_keys else former


def _check_header(data: bytes) -> bytes:
    """The header of an encrypted body; raises DecryptionError if ``data`` is not one."""
    if not data.startswith(MAGIC):
        raise DecryptionError(_not_encrypted(data))
    if len(data) > len(MAGIC) and data[len(MAGIC)] > VERSION:
        raise CodecUnavailableError(  # a newer writer: upgrade this process, then it reads it
            f"it is in version {data[len(MAGIC)]} of the AES-GCM codec's format, and this "
            f"version of durablefuture reads version {VERSION}; upgrade durablefuture here"
        )
    if len(data) > len(MAGIC) and data[len(MAGIC)] != VERSION:
        raise DecryptionError(
            f"it names version {data[len(MAGIC)]} of the format, which never existed"
        )
    if len(data) < OVERHEAD:
        raise DecryptionError(
            f"it is {len(data)} bytes long, shorter than the {OVERHEAD} bytes of an encrypted "
            "body's header, nonce and tag: it was truncated or corrupted"
        )
    return data[:HEADER_SIZE]


def _not_encrypted(data: bytes) -> str:
    if data.lstrip()[:1] in (b"{", b"["):
        return (
            "it is plain JSON, not encrypted: it was written by a client or worker without "
            "the AES-GCM codec; set DF_CODEC=dfcore.contrib.encryption:AESGCMCodec (and the "
            "same DF_ENCRYPTION_KEY) in every client and worker"
        )
    return (
        f"it is not in the AES-GCM codec's format (it does not start with {MAGIC!r}): it was "
        "written by another codec, or corrupted"
    )
