"""Options several commands share, declared once as a dataclass of Typer options.

Typer reads a command's options from its signature. :func:`grouped` lets a command take a
dataclass instead: every parameter annotated with a dataclass whose fields are annotated Typer
options is replaced, in place, by those fields, and the command receives the dataclass built
from them. The dataclass is then the one place an option's name, type, help and default live::

    @dataclass(frozen=True)
    class Estimate:
        seed: Annotated[int, typer.Option(help="seed of the sample bank")] = 0

    @app.command("gmse")
    @grouped
    def gmse_command(formats: ..., estimate: Estimate) -> None:
        ... estimate.seed ...
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

__all__ = ["grouped"]


def grouped(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with its dataclass parameters spread into their fields (see the module)."""
    hints = typing.get_type_hints(command, include_extras=True)
    groups: dict[str, tuple[type, list[str]]] = {}
    parameters: list[inspect.Parameter] = []
    for param in inspect.signature(command).parameters.values():
        kind = hints.get(param.name, param.annotation)
        if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            # Keyword-only, so options with defaults may precede the spread fields' neighbours.
            parameters.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=kind))
            continue
        fields = dataclasses.fields(kind)
        field_hints = typing.get_type_hints(kind, include_extras=True)
        groups[param.name] = (kind, [f.name for f in fields])
        parameters += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=field_hints[f.name], default=f.default)
            for f in fields
        ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        for name, (kind, fields) in groups.items():
            kwargs[name] = kind(**{f: kwargs.pop(f) for f in fields})
        return command(**kwargs)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run
