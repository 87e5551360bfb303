"""The one base of uscl's data models (specs, laws, runs, results).

Frozen, so a validated model is never mutated (and can be hashed and cached), and strict about
keys (``extra="forbid"``), so a typo in a spec or a file is an error, never silently dropped.
Strict about scalar types too: pydantic's lax mode reads ``true`` as 1, 1 as ``true`` and "4"
as 4, so a TOML ``bits = true`` would silently become a 1-bit grid; here a bool is only ever a
bool, and a number is never given as a bool or as text.
"""

from __future__ import annotations

import enum
import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Frozen", "FrozenInput"]

_ANY = frozenset({"bool", "number", "str"})


def _accepts(annotation: Any) -> frozenset[str]:
    """Which of bool, number and str a field's annotation takes (all three where it cannot tell)."""
    if annotation is bool:
        return frozenset({"bool"})
    if annotation in (int, float):
        return frozenset({"number"})
    if annotation is type(None):
        return frozenset()
    if isinstance(annotation, type) and issubclass(annotation, str | enum.Enum):
        return frozenset({"str"})
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(_accepts(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        kinds = set()
        for arg in typing.get_args(annotation):
            kinds.add("bool" if isinstance(arg, bool) else "str" if isinstance(arg, str) else "number")
        return frozenset(kinds)
    if origin in (tuple, list) and annotation is not None:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        # a homogeneous sequence (tuple[float, ...] or a pair tuple[float, float]): items checked alike
        if args and all(a == args[0] for a in args):
            return frozenset("items:" + kind for kind in _accepts(args[0]))
    if origin is dict:
        # a mapping's values are checked as the value type says (a law's draws columns)
        return frozenset("values:" + kind for kind in _accepts(typing.get_args(annotation)[1]))
    return _ANY


@cache
def _scalar_rules(model: type[BaseModel]) -> tuple[tuple[str, frozenset[str]], ...]:
    # (input name, kinds: scalar ones, "items:" a sequence's, "values:" a mapping's) of each field
    # that refuses some kind;
    # worked out once per model, since every result row of a rank goes through here.
    rules = []
    for name, info in model.model_fields.items():
        kinds = _accepts(info.annotation)
        if kinds != _ANY and kinds and frozenset(k.removeprefix("values:") for k in kinds) != _ANY:
            rules.append((info.alias or name, kinds))
    return tuple(rules)


_KIND_OF_TYPE = {bool: "bool", int: "number", float: "number", str: "str"}


def _kind(value: Any) -> str | None:
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


_WANT = {"bool": "write true or false", "number": "give a number", "str": "give text"}


def _inner(kinds: frozenset[str], prefix: str) -> frozenset[str]:
    return frozenset(k.removeprefix(prefix) for k in kinds if k.startswith(prefix))


def _check_scalar(name: str, value: Any, kinds: frozenset[str]) -> None:
    if values := _inner(kinds, "values:"):
        if isinstance(value, dict):
            for item in value.values():
                _check_scalar(name, item, values)
        return
    if items := _inner(kinds, "items:"):
        if isinstance(value, list | tuple):
            for item in value:
                _check_scalar(name, item, items)
        return
    kind = _kind(value)
    if kind is not None and kind not in kinds:
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        want = " or ".join(_WANT[k] for k in sorted(kinds) if k in _WANT)
        raise ValueError(f"{name} = {shown} is {'a boolean' if kind == 'bool' else 'text' if kind == 'str' else 'a number'}; {want}")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, kinds in _scalar_rules(cls):
                value = data.get(name)
                if value is not None:
                    _check_scalar(name, value, kinds)
        return data


class FrozenInput(Frozen):
    """Base of the models a user writes by hand (format specs, training configs, sweeps): nan
    and inf are never a meaningful setting there, so pydantic refuses them for every float."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
