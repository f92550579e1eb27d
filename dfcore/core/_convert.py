"""Type-directed conversion: turning decoded JSON back into the types a function declares.

JSON loses Python types (a dataclass comes back as a dict, a datetime as a string), so values
are passed through :func:`convert` with the type hint of the parameter or return value they
are bound to (``_call_args`` does this for a call's arguments and names the hint for a
result). Values round-trip when the receiving function is annotated.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import inspect
import sys
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import PurePath
from typing import Any

from dfcore.core._codec import _NONE_TYPE, BYTES_TAG, _hint_name, _json_type, _preview
from dfcore.core._errors import SerializationError

__all__ = ["convert"]

# --- type-directed conversion -----------------------------------------------------------------


class _ConvertError(Exception):
    """A conversion failed; collects the path to the failing value as it propagates."""

    def __init__(self, value: Any, hint: Any, reason: str = "") -> None:
        super().__init__(reason)
        self.value = value
        self.hint = hint
        self.reason = reason
        self.path: list[str] = []

    def at(self, step: str) -> _ConvertError:
        self.path.append(step)
        return self

    def message(self, top_value: Any, top_hint: Any) -> str:
        inner = f"expected {_hint_name(self.hint)}, got {_json_type(self.value)} "
        inner += _preview(self.value) + (f" ({self.reason})" if self.reason else "")
        where = "".join(reversed(self.path)).lstrip(".")
        head = f"cannot convert {_json_type(top_value)} to {_hint_name(top_hint)}"
        return f"{head}: at {where}: {inner}" if where else f"{head}: {inner}"


def convert(value: Any, hint: Any) -> Any:
    """Convert a JSON-decoded value into the type named by a type hint.

    ``Any``, a missing hint (``inspect.Parameter.empty``), ``None``/``NoneType``, TypeVars,
    unresolved forward references, TypedDicts and classes this module does not know leave
    the value unchanged. Dataclasses ignore keys they have no field for, so an old history
    still decodes after a field was removed.

    Args:
        value: a value as returned by :meth:`JSONConverter.loads`.
        hint: a type hint (``list[Order]``, ``datetime | None``...).

    Returns:
        The converted value (``value`` itself when it already is an instance of ``hint``).

    Raises:
        SerializationError: the value cannot be converted; the message names the hint, the
            value's JSON type and where inside the value the problem is.
    """
    try:
        return _convert(value, hint)
    except _ConvertError as exc:
        raise SerializationError(exc.message(value, hint)) from exc.__cause__


def _convert(value: Any, hint: Any) -> Any:
    if _is_passthrough(hint):
        return value
    origin = typing.get_origin(hint)
    if origin is not None:
        return _convert_generic(value, hint, origin)
    if isinstance(hint, typing.NewType):
        return _convert(value, hint.__supertype__)
    if not isinstance(hint, type):
        return value  # a typing construct with no runtime shape to restore
    return _convert_class(value, hint)


def _is_passthrough(hint: Any) -> bool:
    if any(hint is plain for plain in (Any, object, None, _NONE_TYPE, inspect.Parameter.empty)):
        return True
    return isinstance(hint, str | typing.ForwardRef | typing.TypeVar)


def _convert_class(value: Any, cls: type) -> Any:
    if typing.is_typeddict(cls):
        return value
    if _safe_isinstance(value, cls):
        return value
    handler = _class_handler(cls)
    return value if handler is None else handler(value, cls)


def _safe_isinstance(value: Any, cls: type) -> bool:
    try:
        return isinstance(value, cls)
    except TypeError:  # non-runtime-checkable Protocols and the like
        return False


@functools.lru_cache(maxsize=1024)
def _class_handler(cls: type) -> Callable[[Any, Any], Any] | None:
    if dataclasses.is_dataclass(cls):
        return _to_dataclass
    if _is_pydantic_model(cls):
        return _to_pydantic
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _to_namedtuple
    for base, handler in _CLASS_HANDLERS:
        if issubclass(cls, base):
            return handler
    return None


def _is_pydantic_model(cls: type) -> bool:
    return callable(getattr(cls, "model_validate", None)) and hasattr(cls, "model_fields")


def _reject(value: Any, cls: Any) -> Any:
    raise _ConvertError(value, cls)


def _to_str(value: Any, cls: Any) -> Any:
    if isinstance(value, str):
        return cls(value)  # a str subclass
    raise _ConvertError(value, cls)


def _to_int(value: Any, cls: Any) -> Any:
    integral = isinstance(value, float) and value.is_integer()
    if integral or (isinstance(value, int) and not isinstance(value, bool)):
        return cls(value)
    raise _ConvertError(value, cls)


def _to_float(value: Any, cls: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return cls(value)
    raise _ConvertError(value, cls)


def _parse_string(value: Any, cls: Any) -> Any:
    if not isinstance(value, str):
        raise _ConvertError(value, cls)
    try:
        return cls(value)
    except (ValueError, TypeError) as exc:
        raise _ConvertError(value, cls, str(exc)) from exc


def _to_datetime(value: Any, cls: Any) -> Any:
    if not isinstance(value, str):
        raise _ConvertError(value, cls)
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return cls.fromisoformat(text)
    except ValueError as exc:
        raise _ConvertError(value, cls, str(exc)) from exc


def _to_timedelta(value: Any, cls: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _ConvertError(value, cls, "a timedelta is sent as its total seconds")
    try:
        return cls(seconds=value)
    except OverflowError as exc:
        raise _ConvertError(value, cls, str(exc)) from exc


def _to_decimal(value: Any, cls: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _ConvertError(value, cls)
    try:
        return cls(str(value))
    except InvalidOperation as exc:
        raise _ConvertError(value, cls, "not a decimal number") from exc


def _to_enum(value: Any, cls: Any) -> Any:
    try:
        return cls(value)
    except ValueError as exc:
        allowed = ", ".join(repr(member.value) for member in cls)
        raise _ConvertError(value, cls, f"valid values: {allowed}") from exc


def _to_bytes(value: Any, cls: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return cls(value)
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(BYTES_TAG), str):
        try:
            return cls(base64.b64decode(value[BYTES_TAG], validate=True))
        except binascii.Error as exc:
            raise _ConvertError(value, cls, f"invalid base64: {exc}") from exc
    raise _ConvertError(value, cls, f'bytes are sent as {{"{BYTES_TAG}": "<base64>"}}')


def _to_sequence_class(value: Any, cls: Any) -> Any:
    if not isinstance(value, list | tuple):
        raise _ConvertError(value, cls)
    try:
        return cls(value)
    except TypeError as exc:  # unhashable items for a set
        raise _ConvertError(value, cls, str(exc)) from exc


def _to_dict_class(value: Any, cls: Any) -> Any:
    if isinstance(value, dict):
        return cls(value)
    raise _ConvertError(value, cls)


_CLASS_HANDLERS: tuple[tuple[type | tuple[type, ...], Callable[[Any, Any], Any]], ...] = (
    (enum.Enum, _to_enum),  # first: IntEnum and StrEnum are also int and str
    (bool, _reject),  # before int, its base class
    (int, _to_int),
    (float, _to_float),
    (str, _to_str),
    ((bytes, bytearray), _to_bytes),
    ((dt.date, dt.time), _to_datetime),
    (dt.timedelta, _to_timedelta),
    ((uuid.UUID, PurePath), _parse_string),
    (Decimal, _to_decimal),
    ((list, tuple, set, frozenset), _to_sequence_class),
    (dict, _to_dict_class),
)


def _to_dataclass(value: Any, cls: Any) -> Any:
    if not isinstance(value, dict):
        raise _ConvertError(value, cls)
    kwargs: dict[str, Any] = {}
    for name, hint in _dataclass_init_hints(cls).items():
        if name in value:
            kwargs[name] = _convert_item(value[name], hint, f".{name}")
    return _construct(cls, value, lambda: cls(**kwargs))


def _to_pydantic(value: Any, cls: Any) -> Any:
    return _construct(cls, value, lambda: cls.model_validate(value))


def _to_namedtuple(value: Any, cls: Any) -> Any:
    hints = _class_hints(cls)
    if isinstance(value, list | tuple):
        items = [
            _convert_item(item, hints.get(name, Any), f".{name}")
            for name, item in zip(cls._fields, value)
        ]
        return _construct(cls, value, lambda: cls(*items, *value[len(items) :]))
    if isinstance(value, dict):
        fields = {k: _convert_item(v, hints.get(k, Any), f".{k}") for k, v in value.items()}
        return _construct(cls, value, lambda: cls(**fields))
    raise _ConvertError(value, cls)


def _construct(cls: Any, value: Any, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except Exception as exc:  # the constructor is user code: missing fields, validators...
        raise _ConvertError(value, cls, f"{type(exc).__name__}: {exc}") from exc


def _convert_item(value: Any, hint: Any, step: str) -> Any:
    try:
        return _convert(value, hint)
    except _ConvertError as exc:
        raise exc.at(step) from exc.__cause__


@functools.lru_cache(maxsize=1024)
def _dataclass_init_hints(cls: type) -> dict[str, Any]:
    hints = _class_hints(cls)
    return {
        field.name: hints.get(field.name, Any) for field in dataclasses.fields(cls) if field.init
    }


@functools.lru_cache(maxsize=1024)
def _class_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable forward reference: resolve what can be resolved
        module = sys.modules.get(cls.__module__)
        globalns = vars(module) if module is not None else {}
        return _resolve_each(getattr(cls, "__annotations__", {}), globalns, dict(vars(cls)))


def _resolve_each(
    annotations: Mapping[str, Any], globalns: dict[str, Any], localns: dict[str, Any] | None
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, annotation in annotations.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            resolved[name] = typing.get_type_hints(holder, globalns, localns)[name]
        except Exception:
            resolved[name] = Any
    return resolved


# --- generic aliases (list[int], dict[str, X], Optional[X], Literal[...]) ---------------------

_LIST_ORIGINS = (
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_SET_ORIGINS = (set, collections.abc.Set, collections.abc.MutableSet)
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _convert_generic(value: Any, hint: Any, origin: Any) -> Any:
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _convert(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, hint, args)
    if origin is typing.Literal:
        return _convert_literal(value, hint, args)
    if origin is tuple:
        return _convert_tuple(value, hint, args)
    if origin in _LIST_ORIGINS:
        return _convert_items(value, hint, args, list)
    if origin in _SET_ORIGINS or origin is frozenset:
        return _convert_items(value, hint, args, frozenset if origin is frozenset else set)
    if origin in _DICT_ORIGINS:
        return _convert_dict(value, hint, args)
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return _convert_class(value, origin)  # a generic dataclass such as Box[int]
    return value


def _convert_items(value: Any, hint: Any, args: tuple[Any, ...], make: type) -> Any:
    if not isinstance(value, list | tuple | set | frozenset):
        raise _ConvertError(value, hint)
    item_hint = args[0] if args else Any
    items = [_convert_item(item, item_hint, f"[{i}]") for i, item in enumerate(value)]
    try:
        return make(items)
    except TypeError as exc:  # unhashable items for a set
        raise _ConvertError(value, hint, str(exc)) from exc


def _convert_tuple(value: Any, hint: Any, args: tuple[Any, ...]) -> Any:
    if not isinstance(value, list | tuple):
        raise _ConvertError(value, hint)
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        return tuple(_convert_items(value, hint, args[:1], list))
    if len(value) != len(args):
        raise _ConvertError(value, hint, f"expected {len(args)} items, got {len(value)}")
    return tuple(
        _convert_item(item, item_hint, f"[{i}]")
        for i, (item, item_hint) in enumerate(zip(value, args))
    )


def _convert_dict(value: Any, hint: Any, args: tuple[Any, ...]) -> Any:
    if not isinstance(value, dict):
        raise _ConvertError(value, hint)
    key_hint, value_hint = args if len(args) == 2 else (Any, Any)
    return {
        _convert_key(key, key_hint): _convert_item(item, value_hint, f"[{key!r}]")
        for key, item in value.items()
    }


_KEY_PARSERS: dict[Any, Callable[[str], Any]] = {
    int: int,
    float: float,
    bool: {"true": True, "false": False}.__getitem__,
}


def _convert_key(key: Any, hint: Any) -> Any:
    # JSON object keys are strings: int/float/bool keys were stringified on the way out.
    parse = _KEY_PARSERS.get(hint) if isinstance(key, str) and isinstance(hint, type) else None
    if parse is None:
        return _convert_item(key, hint, f"[key {key!r}]")
    try:
        return parse(key)
    except (ValueError, KeyError) as exc:
        raise _ConvertError(key, hint, "a dict key").at(f"[key {key!r}]") from exc


def _convert_literal(value: Any, hint: Any, args: tuple[Any, ...]) -> Any:
    for allowed in args:
        if type(allowed) is type(value) and allowed == value:
            return allowed
        if isinstance(allowed, enum.Enum) and allowed.value == value:
            return allowed
    raise _ConvertError(value, hint, "not one of the literal values")


def _convert_union(value: Any, hint: Any, members: tuple[Any, ...]) -> Any:
    exact = [member for member in members if _matches_exactly(value, member)]
    for member in exact + [member for member in members if member not in exact]:
        if member is _NONE_TYPE:
            if value is None:
                return None
            continue
        try:
            return _convert(value, member)
        except _ConvertError:
            continue
    raise _ConvertError(value, hint, "matches none of the union's types")


def _matches_exactly(value: Any, member: Any) -> bool:
    """Whether ``value`` is plainly the JSON form of ``member`` (tried before other members)."""
    if member is _NONE_TYPE:
        return value is None
    cls = typing.get_origin(member) or member
    if not isinstance(cls, type) or typing.is_typeddict(cls):
        return False
    if isinstance(value, dict) and (dataclasses.is_dataclass(cls) or _is_pydantic_model(cls)):
        return set(value) <= _field_names(cls)
    if issubclass(cls, enum.Enum):
        return any(type(m.value) is type(value) and m.value == value for m in cls)
    if cls in (bool, int, float):
        return type(value) is cls
    return _safe_isinstance(value, cls)


def _field_names(cls: Any) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {field.name for field in dataclasses.fields(cls)}
    return set(cls.model_fields)
