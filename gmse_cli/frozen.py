"""The one base of uscl's data models (specs, laws, runs, results).

Frozen, so a validated model is never mutated (and can be hashed and cached), and strict about
keys (``extra="forbid"``), so a typo in a spec or a file is an error, never silently dropped.
Strict about booleans too: pydantic's lax mode reads ``true`` as 1 and 1 as ``true``, so a TOML
``bits = true`` would silently become a 1-bit grid; here a bool is only ever a bool.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Frozen"]


def _admits_bool(annotation: Any) -> bool | None:
    """True: the field takes bools; False: numbers/others only; None: anything (Any, object)."""
    if annotation is bool:
        return True
    if annotation in (Any, object):
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_admits_bool(arg) for arg in typing.get_args(annotation)]
        return None if None in kinds else any(kinds)
    if origin is typing.Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    return False


@cache
def _bool_rules(model: type[BaseModel]) -> dict[str, bool]:
    # field name -> whether it is a bool field; fields typed Any (or holding bools among
    # other types) are left to pydantic.
    rules = {}
    for name, info in model.model_fields.items():
        kind = _admits_bool(info.annotation)
        if kind is None:
            continue
        only_bool = info.annotation is bool or (
            typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
            and all(a in (bool, type(None)) for a in typing.get_args(info.annotation))
        )
        if kind is False or only_bool:
            rules[info.alias or name] = only_bool
    return rules


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _strict_bools(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, is_bool in _bool_rules(cls).items():
                value = data.get(name)
                if value is None:
                    continue
                if not is_bool and (isinstance(value, bool) or (
                        isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value))):
                    raise ValueError(f"{name} = {str(value).lower()} is a boolean; give a number")
                if is_bool and not isinstance(value, bool):
                    raise ValueError(f"{name} = {value!r} is not a boolean; write true or false")
        return data
