"""Payload encoding: JSON conversion and payload codecs (decoding to types: ``_convert``).

Every message body the engine writes is ``codec.encode(converter.dumps(value))``; reading one
is ``converter.loads(safe_decode(codec, data, what))``. JSON loses Python types (a dataclass
comes back as a dict, a datetime as a string), so values are then passed through
:func:`convert` with the type hint of the parameter or return value they are bound to:
:func:`decode_call_args` does this for a call's arguments and :func:`return_hint` names the
hint for a result. Values round-trip when the receiving function is annotated.

Supported values: str, int (64-bit), float, bool, None, list, tuple, dict, set, frozenset,
dataclasses, pydantic v2 models, NamedTuple, datetime, date, time, timedelta, UUID, Decimal,
Enum, bytes and Path. ``bytes`` travel as ``{"$bytes": "<base64>"}``, a timedelta as its
total seconds, a Decimal as its string.
"""

from __future__ import annotations

import abc
import base64
import binascii
import datetime as dt
import enum
import typing
from collections.abc import Callable
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

from dfcore.core._errors import (
    CodecKeyError,
    CodecUnavailableError,
    PayloadError,
    PayloadTooLargeError,
    SerializationError,
)

__all__ = [
    "BYTES_TAG",
    "IdentityCodec",
    "JSONConverter",
    "PayloadCodec",
    "check_size",
    "safe_decode",
    "safe_encode",
]

BYTES_TAG = "$bytes"
"""Key of the single-key object that carries ``bytes`` as base64 in JSON."""

_NONE_TYPE = type(None)
_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS | getattr(orjson, "OPT_SERIALIZE_NUMPY", 0)
_SUPPORTED = (
    "use str, int, float, bool, None, lists, tuples, dicts, sets, dataclasses, pydantic models, "
    "NamedTuples, datetime, date, time, timedelta, UUID, Decimal, Enum, bytes or Path"
)


# --- codecs -----------------------------------------------------------------------------------


class PayloadCodec(abc.ABC):
    """Transforms whole message bodies after JSON encoding, e.g. to compress or encrypt them.

    Every client and worker of an application must use the same codec (and keys), or they
    cannot read each other's messages.

    Example:
        >>> class Reverse(PayloadCodec):
        ...     def encode(self, data: bytes) -> bytes:
        ...         return data[::-1]
        ...     def decode(self, data: bytes) -> bytes:
        ...         return data[::-1]
    """

    @abc.abstractmethod
    def encode(self, data: bytes) -> bytes:
        """Transform an encoded JSON body before it is published.

        Args:
            data: the JSON bytes.

        Returns:
            The bytes to publish.
        """

    @abc.abstractmethod
    def decode(self, data: bytes) -> bytes:
        """Reverse :meth:`encode` on a received body.

        Args:
            data: the bytes as published.

        Returns:
            The original JSON bytes.
        """


class IdentityCodec(PayloadCodec):
    """The default codec: bodies are published as plain JSON."""

    def encode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data

    def decode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data


def safe_encode(codec: PayloadCodec, data: bytes, what: str) -> bytes:
    """Run a (user-supplied) codec's ``encode`` and turn any failure into a SerializationError.

    Args:
        codec: the configured codec.
        data: the JSON bytes.
        what: what the data is, for the error message (``"arguments of activity 'charge'"``).

    Raises:
        SerializationError: the codec raised or did not return bytes.
    """
    try:
        result = codec.encode(data)
    except Exception as exc:
        raise SerializationError(
            f"could not encode {what} with codec {_qualified_name(type(codec))}: "
            f"{type(exc).__name__}: {exc}; check the codec configuration (DF_CODEC)"
        ) from exc
    return _ensure_bytes(result, codec, "encode")


def safe_decode(codec: PayloadCodec, data: bytes, what: str) -> bytes:
    """Run a (user-supplied) codec's ``decode``; a failure raises a PayloadError naming ``what``.

    Args:
        codec: the configured codec.
        data: the received bytes.
        what: what the data is, for the error message (``"history event 7 of 'order-42'"``).

    Raises:
        CodecKeyError: the codec says the data was encoded with a key it does not have (a
            configuration problem of this process, not bad data); raised as is, naming ``what``.
        PayloadError: any other PayloadError the codec raised (corrupt or forged data), as is,
            its message prefixed with ``what``.
        CodecUnavailableError: the codec raised another error (a passing failure, or data
            written by another codec); the engine retries such a message.
        SerializationError: the codec did not return bytes.
    """
    try:
        result = codec.decode(data)
    except CodecKeyError as exc:
        exc.about(what)
        raise
    except PayloadError as exc:
        _name_message(exc, what)
        raise
    except Exception as exc:  # not the codec's verdict on the data: perhaps a passing failure
        raise CodecUnavailableError(
            f"could not decode {what} with codec {_qualified_name(type(codec))}: "
            f"{type(exc).__name__}: {exc}; check the key/codec configuration (DF_CODEC): "
            "every client and worker must use the same codec and keys as the writer "
            "(a codec raises PayloadError for data it can never decode)"
        ) from exc
    return _ensure_bytes(result, codec, "decode")


def _name_message(exc: PayloadError, what: str) -> None:
    """Prefix the message of ``exc`` with ``what``, keeping the error itself (type, attributes)."""
    message = str(exc)
    if what not in message:
        exc.args = (f"cannot decode {what}: {message}",)


def _ensure_bytes(result: object, codec: PayloadCodec, method: str) -> bytes:
    if isinstance(result, bytes):
        return result
    if isinstance(result, bytearray | memoryview):
        return bytes(result)
    raise SerializationError(
        f"codec {_qualified_name(type(codec))}.{method}() returned "
        f"{type(result).__name__}; it must return bytes"
    )


def check_size(nbytes: int, limit: int, what: str) -> None:
    """Refuse a message the NATS server would reject.

    Args:
        nbytes: the encoded size.
        limit: the server's ``max_payload``.
        what: what the message carries, for the error message.

    Raises:
        PayloadTooLargeError: ``nbytes`` is over ``limit``.
    """
    if nbytes > limit:
        raise PayloadTooLargeError(
            f"{what} is {nbytes} bytes after encoding, over the NATS server's max_payload of "
            f"{limit} bytes; pass a reference (a database id, an object-store key) instead of "
            "the data, or raise max_payload in the server config"
        )


# --- JSON -------------------------------------------------------------------------------------


class _UnsupportedTypeError(TypeError):
    """Raised by the ``default`` hook; carries the offending type to the error message."""

    def __init__(self, obj: object) -> None:
        self.type_name = _qualified_name(type(obj))
        super().__init__(f"{self.type_name} is not JSON-serializable")


class JSONConverter:
    """Encodes values to JSON bytes and back, with clear errors.

    Subclass and extend :meth:`default` to support more types (and call ``super().default``
    for the rest); decode them with a matching type hint.
    """

    def dumps(self, value: Any, *, what: str = "value") -> bytes:
        """Encode ``value`` as JSON.

        Args:
            value: what to encode.
            what: what the value is, for the error message.

        Raises:
            SerializationError: the value (or something inside it) is not supported.
        """
        try:
            return orjson.dumps(value, default=self.default, option=_DUMPS_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise SerializationError(_encode_error_message(exc, what)) from exc

    def loads(self, data: bytes | bytearray | memoryview | str, *, what: str = "payload") -> Any:
        """Decode JSON; ``{"$bytes": ...}`` objects come back as ``bytes``.

        Args:
            data: the JSON document.
            what: what the document is, for the error message.

        Raises:
            SerializationError: ``data`` is not valid JSON.
        """
        if isinstance(data, memoryview):
            data = data.tobytes()
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"{what} is not valid JSON: {exc}") from exc
        tagged = '"$bytes"' in data if isinstance(data, str) else b'"$bytes"' in data
        try:
            return _untag_bytes(value) if tagged else value
        except RecursionError as exc:
            raise SerializationError(f"{what} is nested too deeply") from exc

    def default(self, obj: Any) -> Any:
        """Turn a value orjson does not know into one it does.

        Args:
            obj: the value orjson could not encode.

        Raises:
            TypeError: the type is not supported.
        """
        if callable(getattr(type(obj), "model_dump", None)):  # pydantic v2, without importing it
            return _dump_model(obj)
        for types_, encode in _ENCODERS:
            if isinstance(obj, types_):
                return encode(obj)
        raise _UnsupportedTypeError(obj)


def _dump_model(model: Any) -> Any:
    try:
        return model.model_dump(mode="json")
    except ValueError:
        # JSON mode fails on non-UTF-8 bytes; Python mode hands them to default() to be tagged.
        return model.model_dump(mode="python")


def _sorted_if_possible(items: set[Any] | frozenset[Any]) -> list[Any]:
    # Sorting makes the bytes independent of hash randomisation, so equal values encode equally.
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _tag_bytes(data: bytes | bytearray | memoryview) -> dict[str, str]:
    return {BYTES_TAG: base64.b64encode(data).decode("ascii")}


_ENCODERS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    ((set, frozenset), _sorted_if_possible),
    ((bytes, bytearray, memoryview), _tag_bytes),
    (Decimal, str),
    (enum.Enum, lambda member: member.value),
    (dt.timedelta, lambda delta: delta.total_seconds()),
    (PurePath, str),
    (tuple, list),  # NamedTuple and other tuple subclasses; orjson encodes only exact tuples
)


def _encode_error_message(exc: orjson.JSONEncodeError, what: str) -> str:
    cause = exc.__cause__
    if isinstance(cause, _UnsupportedTypeError):
        return f"cannot encode {what}: {cause.type_name} is not JSON-serializable; {_SUPPORTED}"
    if cause is not None:
        return f"cannot encode {what}: {type(cause).__name__}: {cause}"
    message = str(exc)
    if message.startswith("Integer exceeds"):
        hint = "integers must fit in 64 bits; send larger numbers as str or Decimal"
    elif message.startswith("Dict key"):
        hint = "dict keys must be str, int, float, bool, Enum, UUID, datetime, date or time"
    elif message.startswith("Recursion"):
        hint = "the value is nested too deeply or contains a reference cycle"
    else:
        hint = _SUPPORTED
    return f"cannot encode {what}: {message}; {hint}"


def _untag_bytes(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(BYTES_TAG), str):
            try:
                return base64.b64decode(value[BYTES_TAG], validate=True)
            except binascii.Error:
                return value  # a user dict that merely looks like the tag
        return {key: _untag_bytes(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untag_bytes(item) for item in value]
    return value


# --- names for messages -----------------------------------------------------------------------

_JSON_TYPES: dict[type, str] = {
    _NONE_TYPE: "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value)) or _qualified_name(type(value))


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type) and typing.get_origin(hint) is None:
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def _qualified_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
