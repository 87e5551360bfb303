"""Consoles shared by every command: data to stdout, messages and progress to stderr."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from gmse_cli.grammar import SHORTHAND_HELP
from gmse_cli.progress import stderr_console

__all__ = ["out_console", "err_console", "print_json", "FORMAT_EPILOG", "RECOMPUTE_HELP"]

RECOMPUTE_HELP = (
    "compute every GMSE with the engine (and refresh the cache) instead of reading the shipped table "
    "and the on-disk cache"
)

# The format grammar as a Typer epilog: escaped (lut[...] is not rich markup); rich help keeps
# an epilog's single line breaks, so the grammar's layout survives.
FORMAT_EPILOG = escape(SHORTHAND_HELP)

# Rich respects NO_COLOR by itself. Piped tables get a wide page (COLUMNS still wins) so that
# numbers are not folded into unreadable cells. Messages and progress share the library's
# stderr console (gmse_cli.progress), so a note printed during a bar lands above it.
out_console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
err_console = stderr_console()


def print_json(payload: Any, **extra: Any) -> None:
    """Write ``payload`` (a list of result dicts, or one) to stdout in the JSON envelope every
    command shares (:mod:`gmse_cli.cli.output`), and nothing else.

    JSON has no nan or inf: a result holding one is one clear error naming where it is (the
    libraries name the tensor or constant first where they can), never invalid JSON.
    """
    from gmse_cli.cli.output import print_json as emit

    where = _non_finite(payload) or _non_finite(extra)
    if where is not None:
        from gmse_cli.errors import DataError

        raise DataError(f"result {where[0]} is {where[1]}; JSON cannot carry it (check the inputs that lead to it)")
    emit(payload, **extra)


def _non_finite(payload: Any) -> tuple[str, float] | None:
    """(path, value) of the first nan or inf in ``payload``, as ``[0].rho``; None if none."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "value", item
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), value) for key, value in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", value) for i, value in reversed(list(enumerate(item))))
    return None
