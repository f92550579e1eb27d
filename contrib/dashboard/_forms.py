"""Start forms: a workflow's parameters from its signature, and the values a form sends
checked against them.

Type hints become fields: ``str``, ``int``, ``float`` and ``bool`` (and their optional forms)
are plain inputs; anything else is JSON, which the form validates before it sends and the
server checks again here. Arguments are sent positionally, in the signature's order, with the
defaults of the parameters the form left out.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KINDS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}


class FormError(ValueError):
    """A value the form sent does not fit the workflow's parameters (HTTP 400)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # str, int, float, bool or json
    required: bool
    default: Any
    annotation: str
    nullable: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "required": self.required,
            "default": self.default if _jsonable(self.default) else None,
            "annotation": self.annotation,
            "nullable": self.nullable,
        }


def parameters(fn: Any) -> list[Parameter]:
    """The parameters of a workflow function after its context, as form fields."""
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # hints naming what cannot be imported here: fall back to JSON
        hints = {}
    out = []
    for i, param in enumerate(signature.parameters.values()):
        if i == 0 or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue  # ctx, *args, **kwargs
        hint = hints.get(param.name, param.annotation)
        kind, nullable = _kind(hint)
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        out.append(Parameter(param.name, kind, required, default, _describe(hint), nullable))
    return out


def arguments(params: list[Parameter], kwargs: Mapping[str, Any]) -> list[Any]:
    """The positional arguments for the values a form sent.

    Raises:
        FormError: an unknown or missing parameter, or a value of the wrong type.
    """
    names = {p.name for p in params}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise FormError(f"unknown parameter {unknown[0]!r}; the workflow takes {sorted(names)}")
    args = []
    for param in params:
        if param.name not in kwargs:
            if param.required:
                raise FormError(f"parameter {param.name!r} is required")
            args.append(param.default)
            continue
        args.append(_checked(param, kwargs[param.name]))
    return args


def _checked(param: Parameter, value: Any) -> Any:
    if value is None and (param.nullable or param.kind == "json"):
        return None
    expected = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
    if param.kind == "json":
        return value
    ok = isinstance(value, expected[param.kind]) and not (
        param.kind in ("int", "float") and isinstance(value, bool)
    )
    if not ok:
        raise FormError(f"parameter {param.name!r} must be {param.kind}, not {value!r}")
    return float(value) if param.kind == "float" else value


def _kind(hint: Any) -> tuple[str, bool]:
    """``(kind, nullable)`` of a type hint."""
    if hint in _KINDS:
        return _KINDS[hint], False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        if len(members) == 1 and members[0] in _KINDS:
            return _KINDS[members[0]], nullable
    return "json", True


def _describe(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "any"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)
