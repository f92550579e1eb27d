"""A call's arguments and result, converted to the types its function declares.

:func:`decode_call_args` binds decoded JSON arguments to a function's parameters and converts
each with its hint (``_convert``); :func:`check_call_args` checks arguments before a start or
a schedule, so a bad one fails in the caller; :func:`return_hint` names the hint of a result.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from dfcore.core._convert import _convert, _ConvertError, _resolve_each
from dfcore.core._errors import SerializationError

__all__ = ["check_call_args", "decode_call_args", "return_hint"]


class _CallInfo(NamedTuple):
    params: tuple[inspect.Parameter, ...]
    hints: dict[str, Any]


def decode_call_args(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    skip_first: bool = False,
) -> tuple[list[Any], dict[str, Any]]:
    """Convert JSON-decoded call arguments to the types ``fn`` is annotated with.

    Arguments that bind to no parameter are passed through unchanged, so a wrong argument
    count still raises the usual TypeError when ``fn`` is called.

    Args:
        fn: the workflow or activity function.
        args: positional arguments as decoded from JSON.
        kwargs: keyword arguments as decoded from JSON.
        skip_first: skip ``fn``'s first parameter (a workflow's ``ctx``), which is not in
            ``args``.

    Returns:
        The converted positional and keyword arguments.

    Raises:
        SerializationError: an argument cannot be converted to its parameter's type.
    """
    info = _call_info(fn)
    params = info.params[1:] if skip_first else info.params
    name = getattr(fn, "__qualname__", repr(fn))
    out_args = _convert_positional(args, params, info.hints, name)
    out_kwargs = _convert_keywords(kwargs, params, info.hints, name)
    return out_args, out_kwargs


def check_call_args(
    fn: Callable[..., Any], args: Sequence[Any], *, skip_first: bool, what: str
) -> None:
    """Raise at the call site what calling ``fn(*args)`` later, in a worker, would raise.

    Args:
        fn: the workflow or activity function.
        args: the positional arguments it is to be called with.
        skip_first: skip ``fn``'s first parameter (a workflow's ``ctx``).
        what: names the function in the message (``"workflow 'fulfil_order'"``).

    Raises:
        TypeError: too many or too few arguments; the message shows the parameters.
    """
    signature = _signature(fn, skip_first)
    if signature is None:
        return
    try:
        signature.bind(*args)
    except TypeError as exc:
        shown = ", ".join(str(p.replace(annotation=p.empty)) for p in signature.parameters.values())
        raise TypeError(
            f"{what} cannot be called with {len(args)} argument(s): {exc}; its parameters are "
            f"({shown})"
        ) from None


@functools.lru_cache(maxsize=4096)
def _signature(fn: Callable[..., Any], skip_first: bool) -> inspect.Signature | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return None
    params = list(signature.parameters.values())
    if skip_first and params and params[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        params = params[1:]  # a ``*args`` first takes ``ctx`` and the arguments alike
    return signature.replace(parameters=params)


def return_hint(fn: Callable[..., Any]) -> Any:
    """The type a call of ``fn`` produces: its return annotation, ``Awaitable[X]`` unwrapped.

    Returns:
        The resolved hint, or ``Any`` when ``fn`` has none (or it cannot be resolved).
    """
    hint = _call_info(fn).hints.get("return", Any)
    if typing.get_origin(hint) in (collections.abc.Awaitable, collections.abc.Coroutine):
        args = typing.get_args(hint)
        return args[-1] if args else Any
    return hint


def _convert_positional(
    args: Sequence[Any], params: Sequence[inspect.Parameter], hints: dict[str, Any], fn: str
) -> list[Any]:
    positional = [p.name for p in params if p.kind in _POSITIONAL_KINDS]
    star = next((p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    out: list[Any] = []
    for index, arg in enumerate(args):
        name = positional[index] if index < len(positional) else star
        out.append(arg if name is None else _convert_arg(arg, hints.get(name, Any), name, fn))
    return out


def _convert_keywords(
    kwargs: Mapping[str, Any], params: Sequence[inspect.Parameter], hints: dict[str, Any], fn: str
) -> dict[str, Any]:
    named = {p.name for p in params if p.kind in _KEYWORD_KINDS}
    star = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    out: dict[str, Any] = {}
    for key, arg in kwargs.items():
        name = key if key in named else star
        out[key] = arg if name is None else _convert_arg(arg, hints.get(name, Any), key, fn)
    return out


_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _convert_arg(value: Any, hint: Any, name: str, fn: str) -> Any:
    try:
        return _convert(value, hint)
    except _ConvertError as exc:
        raise SerializationError(
            f"argument {name!r} of {fn}: {exc.message(value, hint)}"
        ) from exc.__cause__


def _call_info(fn: Callable[..., Any]) -> _CallInfo:
    try:
        hash(fn)
    except TypeError:
        return _inspect_call(fn)
    return _cached_call_info(fn)


@functools.lru_cache(maxsize=4096)
def _cached_call_info(fn: Callable[..., Any]) -> _CallInfo:
    return _inspect_call(fn)


def _inspect_call(fn: Callable[..., Any]) -> _CallInfo:
    try:
        params = tuple(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return _CallInfo((), {})
    return _CallInfo(params, _callable_hints(fn))


def _callable_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target: Any = fn
    if isinstance(fn, type):
        target = typing.cast(Any, fn).__init__
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)) and callable(fn):
        target = getattr(type(fn), "__call__", fn)  # noqa: B004 - the class's method, not fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # e.g. a forward reference to a name defined later or locally
        unwrapped = inspect.unwrap(target)
        globalns = getattr(unwrapped, "__globals__", {})
        return _resolve_each(getattr(target, "__annotations__", {}) or {}, globalns, None)
