"""Consoles shared by every command: data to stdout, messages and progress to stderr.

The consoles are made on first use (``out_console``, ``err_console`` are module attributes
built by ``__getattr__``): a piped `uscl predict` prints plain text and never imports rich,
which costs about a tenth of a warm run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import TYPE_CHECKING, Any

from gmse_cli.cli.texttable import FOLDED_TEXT_WIDTH
from gmse_cli.grammar import SHORTHAND_HELP
from gmse_cli.messages import stderr_console, stream_is_terminal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["stdout_is_terminal", "help_text", "print_table", "drawing", "wrote", "shown_path", "FORMAT_EPILOG",
           "RECOMPUTE_HELP"]


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


def print_table(table: Table, optional: Sequence[str] = ()) -> None:
    """Print a rich ``table`` to stdout, cutting nothing (rich alone cut cells to '0.0…' at 80
    columns): to fit the terminal, text columns (left-justified: names, layers) fold down to
    :data:`FOLDED_TEXT_WIDTH` (or their ``min_width``) and headers wrap between words, while a
    number column stays as wide as its widest number. If that is still too wide, the frame goes
    (a rule under the header, two spaces between columns), then the ``optional`` columns
    (headers, least needed first) are left out, named in one note on stderr. A table that cannot
    fit so is drawn at the width it needs and the terminal wraps its lines, as with the
    plain-text tables."""
    console = _out_console()
    for column in table.columns:
        column.overflow = "fold"
    ranges, frame = _layout(console, table)
    if sum(most for _, most in ranges) + frame <= console.width:
        console.print(table)
        return
    if sum(least for least, _ in ranges) + frame > console.width:
        from rich import box

        table.box, table.show_edge, table.pad_edge = box.SIMPLE_HEAD, False, False
        table.padding = (0, 0, 0, 1)  # with the blank rule between them: two spaces between columns
        ranges, frame = _layout(console, table)
        frame += 1  # rich can lay this frame out a character wider than it measures
    left_out = []
    for header in optional:
        if sum(least for least, _ in ranges) + frame <= console.width:
            break
        column = next((c for c in table.columns if c.header == header), None)
        if column is not None and len(table.columns) > 1:
            table.columns.remove(column)
            left_out.append(" ".join(str(header).split()))
            ranges, frame = _layout(console, table)
    room = console.width - frame
    if sum(most for _, most in ranges) <= room:
        console.print(table)
    else:
        widths = [least for least, _ in ranges]
        spare, slack = room - sum(widths), [most - least for least, most in ranges]
        if spare > 0:  # share what is left in proportion to what each column would still take
            widths = [w + spare * s // sum(slack) for w, s in zip(widths, slack, strict=True)]
        for column, width in zip(table.columns, widths, strict=True):
            column.width = width
        terminal = console.width
        console.width = max(terminal, sum(widths) + frame)
        try:
            console.print(table)
        finally:
            console.width = terminal
    if left_out:
        from gmse_cli.cli.texttable import note_left_out

        note_left_out(left_out, console.width)


def _layout(console, table: Table) -> tuple[list[tuple[int, int]], int]:
    """Each column's (narrowest, widest) content width, and what borders and padding add."""
    from rich.measure import Measurement

    for column in table.columns:
        column.width = None
    ranges = [_column_range(column) for column in table.columns]
    natural = Measurement.get(console, console.options.update_width(1 << 20), table).maximum
    return ranges, natural - sum(most for _, most in ranges)


def _column_range(column) -> tuple[int, int]:
    """(narrowest, widest) content width of a column: a number column never narrower than its
    widest cell, a text column down to its longest word or FOLDED_TEXT_WIDTH; headers wrap."""
    from rich.cells import cell_len

    def lines(cell: object) -> list[str]:
        return str(cell).splitlines() or [""]

    body = [cell_len(line) for cell in column.cells for line in lines(cell)]
    header = lines(column.header)
    widest = max([*body, *(cell_len(line) for line in header)], default=1)
    header_word = max((cell_len(word) for line in header for word in line.split()), default=1)
    if column.justify == "right":
        return max([*body, header_word, 1]), widest
    word = max((cell_len(w) for cell in column.cells for line in lines(cell) for w in line.split()), default=1)
    least = min(widest, max(min(max(word, header_word), FOLDED_TEXT_WIDTH), 1))
    # a column of names that must read whole (a fitted constant's "quantization.L") says so by its min_width
    return max(least, min(column.min_width or 0, widest)), widest


def quiet_foreign_loggers() -> None:
    """Silence below errors the loggers of libraries transformers loads when installed (torchao:
    its CUDA kernels missing on a CPU machine; torch's deprecation of torchao's own enum
    registrations): lines a uscl user cannot act on, amid the progress lines. The command
    line owns its process; the library never calls this."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def drawing(path: object) -> AbstractContextManager[Any]:
    """A status line on a terminal while a ``--plot`` is drawn: matplotlib's import, the layout
    and the label placement take 2.6 s of CPU for `uscl rank --plot` (8-10 s on a busy 2-core
    machine), after the command's own bar has gone; without it the run falls silent. Piped,
    nothing, as every bar (``wrote plot PATH`` follows either way)."""
    from gmse_cli.messages import stderr_is_terminal
    from gmse_cli.progress import status

    return status(f"drawing plot {shown_path(path)} ...", enabled=stderr_is_terminal())


def shown_path(path: object) -> str:
    """``path`` as rich prints it back: brackets in a name are text, not markup (``law[red].toml``
    was shown as ``law.toml``), bytes that are not UTF-8 as ``\\xNN``."""
    from rich.markup import escape

    from gmse_cli.inputs import printable_path

    return escape(printable_path(str(path)))


def wrote(what: str, path: object) -> None:
    """The ``wrote WHAT PATH`` line on stderr after a file is written."""
    from gmse_cli.messages import stderr_console

    stderr_console().print(f"wrote {what} {shown_path(path)}")


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
