"""Where everything uscl says goes: one stderr console, and the one-line messages said on it.

Data goes to stdout (the CLI prints it); notes, warnings and plain lines go to one stderr console,
which respects ``NO_COLOR`` (rich reads it) and is made on first use, so that importing the
library does not import rich. Progress bars (:mod:`gmse_cli.progress`) draw on the same console.
Nothing here imports from above the ground floor, so every room can speak::

    note("layer x skipped: its row length is not a multiple of the group")
"""

from __future__ import annotations

import os
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

from gmse_cli.errors import visible

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "stderr_console",
    "stderr_is_terminal",
    "stream_is_terminal",
    "escape_text",
    "note",
    "warning",
    "cache_note",
    "clear_cache_note",
    "info",
]


@cache
def stderr_console() -> Console:
    """The stderr console every message and bar of uscl goes to (rich honours NO_COLOR).

    Made on first use, so that importing the library does not import rich."""
    from rich.console import Console

    class _StderrConsole(Console):
        def on_broken_pipe(self) -> None:
            # stderr's reader is gone (a log collector that died, `2> >(head -1)`): nothing more
            # is said there, and the command goes on. rich's own handler put the null device over
            # *stdout* and exited 1 (from a bar's line thread, exit 0): the data, a --json result
            # written to a file, was lost.
            self.quiet = True

    console = _StderrConsole(stderr=True)
    # In a log file a message stays one line: rich would break it at 80 columns, a path too.
    console.soft_wrap = not console.is_terminal
    return console


# Settings under which rich calls a stream a terminal whatever isatty says.
_FORCING = ("FORCE_TERMINAL", "TTY_COMPATIBLE", "FORCE_COLOR", "TTY_INTERACTIVE")


def stream_is_terminal(stream: Any, console: Any) -> bool:
    """Whether ``console()`` (a rich console on ``stream``) is a terminal; for a plain pipe the
    answer rich would give (no) without importing rich."""
    if not any(name in os.environ for name in _FORCING):
        isatty = getattr(stream, "isatty", None)
        try:
            if isatty is None or not isatty():
                return False
        except ValueError:  # a closed stream
            return False
    return console().is_terminal


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (a bar is redrawn in place only on one that is interactive,
    :func:`~gmse_cli.progress.stderr_is_interactive`; elsewhere it is whole lines)."""
    return stream_is_terminal(sys.stderr, stderr_console)


def escape_text(text: str) -> str:
    """``text`` to print through rich: never rich markup, and no control character from a name
    read in a file."""
    from rich.markup import escape

    return escape(visible(text))


def note(message: str) -> None:
    """One line on stderr for something the user should know: ``note: <message>``."""
    stderr_console().print(f"[yellow]note:[/] {escape_text(message)}", highlight=False)


def warning(message: str) -> None:
    """One line on stderr for what is likely a mistake, though allowed: ``warning: <message>``."""
    stderr_console().print(f"[yellow]warning:[/] {escape_text(message)}", highlight=False)


_cache_noted = False


def cache_note(message: str) -> None:
    """:func:`note` that a cache cannot be kept (a full disk, a read-only folder), the first a
    process gives: a cache only saves time, so one line says so; another cache failing on the
    same full disk (numba's kernels and the codebooks, say) adds none."""
    global _cache_noted
    if not _cache_noted:
        _cache_noted = True
        note(message)


def clear_cache_note() -> None:
    """Let the next :func:`cache_note` be said again."""
    global _cache_noted
    _cache_noted = False


def info(message: str) -> None:
    """One plain line on stderr (what a long command is doing, where it wrote)."""
    stderr_console().print(visible(message), highlight=False, markup=False)

