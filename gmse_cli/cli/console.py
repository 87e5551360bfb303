"""Consoles shared by every command: data to stdout, messages and progress to stderr.

The consoles are made on first use (``out_console``, ``err_console`` are module attributes
built by ``__getattr__``): a piped `uscl predict` prints plain text and never imports rich,
which costs about a tenth of a warm run.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import TYPE_CHECKING

from gmse_cli.grammar import SHORTHAND_HELP
from gmse_cli.progress import stderr_console, stream_is_terminal

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stdout_is_terminal", "help_text", "FORMAT_EPILOG", "RECOMPUTE_HELP"]

RECOMPUTE_HELP = (
    "compute every GMSE with the engine (and refresh the cache) instead of reading the shipped table "
    "and the on-disk cache"
)


def help_text(text: str) -> str:
    """``text`` shown as written in rich help (Typer reads help as rich markup): every '[' escaped,
    which rich reads as a literal bracket, so ``lut[...]`` is never taken for a tag."""
    return text.replace("[", "\\[")


# The format grammar as a Typer epilog; rich help keeps an epilog's single line breaks, so the
# grammar's layout survives.
FORMAT_EPILOG = help_text(SHORTHAND_HELP)


@cache
def _out_console() -> Console:
    from rich.console import Console

    # Rich respects NO_COLOR by itself. Piped tables get a wide page (COLUMNS still wins) so that
    # numbers are not folded into unreadable cells.
    return Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal as rich judges it, without importing rich for a pipe."""
    return stream_is_terminal(sys.stdout, _out_console)


def __getattr__(name: str):
    # Messages and progress share the library's stderr console (gmse_cli.progress), so a note
    # printed during a bar lands above it.
    if name == "out_console":
        return _out_console()
    if name == "err_console":
        return stderr_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
