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
from pathlib import Path
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


# --------------------------------------------------------------------------------------------
# One vocabulary across commands: the options several commands spell the same way, the help
# epilog's examples, and the deprecated spellings that still work.
# --------------------------------------------------------------------------------------------


from typing import Annotated  # noqa: E402  (imports of this block stay with it)

import typer  # noqa: E402

__all__ += ["JsonFlag", "CsvFlag", "RowLength", "ActFormat", "Plot", "examples", "paragraphs", "renamed", "one_output"]

JSON_HELP = "print one JSON object to stdout: schema_version, command, results (see the README's JSON table)"
CSV_HELP = "print the results as CSV to stdout (scalar columns)"

JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
CsvFlag = Annotated[bool, typer.Option("--csv", help=CSV_HELP)]
RowLength = Annotated[int, typer.Option("--row-length", help="row length (input dimension) of the Gaussian tensors GMSE is computed on")]
ActFormat = Annotated[
    str | None, typer.Option("--act", help="activation format (catalog name, .toml or shorthand) paired with the weights", show_default="none")
]
Plot = Annotated[Path | None, typer.Option("--plot", help="write a plot here; .png, .svg or .pdf by the extension")]


def paragraphs(text: str) -> str:
    """``text`` with each paragraph on one line: rich help keeps single newlines as line breaks."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


# An epilog line is printed one column in: commands longer than this go on over lines ending in
# " \\", so that at 80 columns no example is folded by the terminal (and a copied line runs whole).
EXAMPLE_WIDTH = 76


def _example_lines(command: str) -> list[str]:
    """``command`` in lines of at most :data:`EXAMPLE_WIDTH` columns (two in, continuations six
    in), each but the last ending in a shell line continuation, broken between words (never
    between an option and its value)."""
    words: list[str] = []
    for word in command.split(" "):
        if words and words[-1].startswith("-") and " " not in words[-1] and not word.startswith("-"):
            words[-1] += " " + word
        else:
            words.append(word)
    lines, line = [], "  "
    for word in words:
        if line.strip() and len(line) + 1 + len(word) + 2 > EXAMPLE_WIDTH:
            lines.append(line + " \\")
            line = "      "
        line += ("" if not line.strip() else " ") + word
    return [*lines, line]


def examples(*commands: str, notes: str = "") -> str:
    """A help epilog: 'Examples:' and one command a line (rich keeps single line breaks; a long
    command goes on over lines ending in a shell continuation), then ``notes``."""
    from gmse_cli.cli.console import help_text

    text = "Examples:\n" + "\n".join(help_text(line) for c in commands for line in _example_lines(c))
    return text + (f"\n\n{notes}" if notes else "")


def renamed(old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """The value of an option given by its deprecated spelling ``old`` (say so on stderr), or the new one's."""
    if old_value is None or old_value is False:
        return new_value
    from gmse_cli.errors import SpecError
    from gmse_cli.messages import note

    if new_value not in (None, False):
        raise SpecError(f"{old} is the old spelling of {new}; give only {new}")
    note(f"{old} is deprecated; use {new}")
    return old_value


def one_output(json_out: bool, csv_out: bool) -> None:
    """--json and --csv each print the whole result to stdout: one of them at most."""
    if json_out and csv_out:
        from gmse_cli.errors import SpecError

        raise SpecError("choose one of --json and --csv")
