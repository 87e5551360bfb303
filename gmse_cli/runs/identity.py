"""Which format a runs file's spelling names: the one notion of "the same format" that pooling a
file's spellings (:mod:`gmse_cli.fit.spellings`) and ``--where`` (:mod:`gmse_cli.runs.select`)
share, so that a selection keeps or drops a pooled format whole.

Two spellings name the same format when their formats do the same thing (:func:`format_content`:
the format without its name and description): ``fp4``, ``FP4`` and ``e2m1``; ``bf16`` and
``BF16``. A format file's path is no spelling: its scheme is the name the file holds. Nor is a
scheme the file labels itself (a CSV's ``scheme`` cell): that label stays as written.
"""

from __future__ import annotations

from typing import NamedTuple

from gmse_cli.errors import UsclError
from gmse_cli.inputs import is_file
from gmse_cli.runs.model import Run, scheme_name
from gmse_cli.spec import Format, resolve_format

__all__ = ["Spelled", "format_content", "is_format_file", "labelled", "spelled", "run_spelled", "named_content"]


class Spelled(NamedTuple):
    """The format one tensor's cell names: what it does, and its own name (None: no format)."""

    content: str
    name: str | None


def format_content(fmt: Format | None) -> str:
    """What a format does, without its name and description ('' for no format)."""
    return "" if fmt is None else fmt.model_dump_json(exclude={"name", "description"})


def is_format_file(spelling: str | None) -> bool:
    """Whether a format cell is a format file's path (named by the file, not spelled)."""
    return spelling is not None and (spelling.endswith(".toml") or is_file(spelling))


def labelled(run: Run) -> bool:
    """Whether the file names the run's scheme itself rather than by its formats' spellings."""
    return run.scheme != scheme_name(run.weights, run.activations)


def spelled(spelling: str | None, inline: Format | None = None) -> Spelled | None:
    """The format a run's tensor cell ``spelling`` names (its ``inline`` format where the run
    carries one, as :meth:`Run.weight_format` reads it); None for a format file's path."""
    if is_format_file(spelling):
        return None
    fmt = inline if inline is not None else None if spelling is None else resolve_format(spelling)
    return Spelled(format_content(fmt), None if fmt is None else fmt.display_name)


def run_spelled(run: Run) -> tuple[Spelled, Spelled] | None:
    """The run's (weights, activations) formats; None where either is a format file's path."""
    w, a = spelled(run.weights, run.weights_spec), spelled(run.activations, run.activations_spec)
    return None if w is None or a is None else (w, a)


def named_content(value: str) -> str | None:
    """:func:`format_content` of the format ``value`` names as a catalog name or shorthand (in
    any case); None for a format file's path or a value that names no format."""
    if is_format_file(value):
        return None
    try:
        return format_content(resolve_format(value))
    except (UsclError, ValueError):
        return None
