"""Consoles shared by every command: data to stdout, messages and progress to stderr."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

from gmse_cli.grammar import SHORTHAND_HELP
from gmse_cli.progress import stderr_console

__all__ = ["out_console", "err_console", "FORMAT_EPILOG", "RECOMPUTE_HELP"]

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
