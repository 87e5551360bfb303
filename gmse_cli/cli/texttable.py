"""Compact text tables for the commands people run most (`rank`, `predict`, `gmse`).

A title line, a header (a cell may span two lines: values narrower than their name keep the
column narrow), a rule, then the rows: two spaces between columns, no frame. Given a width (the
terminal's, or COLUMNS; a pipe without COLUMNS has none), a table wider than it first folds its
text columns (names, labels: at spaces, else anywhere) down to 12 characters, then leaves out
the columns it names as optional, least needed first, with one note on stderr; a number is never
folded or cut, and a table that still cannot fit is drawn at the width it needs. Rich's Table lays out the same 80 rows in about 80 ms, a sixth of a warm `uscl rank`; this
writer takes about 2 ms. On a terminal, rows marked bold are printed bold (through the shared
console, so NO_COLOR and dumb terminals are respected); piped, the text is plain.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gmse_cli.errors import visible

__all__ = ["TextTable", "print_lines", "print_flag", "name_list", "print_capacity_flags", "output_width",
           "note_left_out"]

Justify = Literal["left", "right"]

FOLDED_TEXT_WIDTH = 12
"""A text column (a name, a layer, a description) folds down to this many characters before
a column is left out or the table is drawn wider than the terminal (rich tables too)."""


def output_width() -> int | None:
    """The width stdout's lines should fit: COLUMNS when it is a positive whole number, else the
    terminal's; None for a pipe without COLUMNS (whole lines for programs). Garbage in COLUMNS
    ('abc', '-5', '0') is ignored."""
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) > 0:
        return int(raw)
    from gmse_cli.cli import console

    if not console.stdout_is_terminal():
        return None
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        return None


def note_left_out(columns: Sequence[str], width: int) -> None:
    """One stderr line naming the columns a table left out to fit ``width``."""
    if columns:
        from gmse_cli.cli import console

        names = ", ".join(f"'{c}'" for c in columns)
        console.err_console.print(f"note: left out {names} to fit {width} columns (a wider terminal or --json "
                                  "shows every column)", highlight=False, markup=False, soft_wrap=True)


def _fold(cell: str, width: int) -> list[str]:
    """``cell`` in lines of at most ``width``: broken at spaces where it can, else anywhere."""
    if len(cell) <= width:
        return [cell]
    return textwrap.wrap(cell, width, break_on_hyphens=False) or [""]


@dataclass
class TextTable:
    """Columns of (header, justify); header lines split at '\\n' and sit on the bottom line."""

    title: str | None = None
    columns: list[tuple[str, Justify]] = field(default_factory=list)
    show_header: bool = True
    indent: int = 0  # spaces before the first column (a header-less list of label: value pairs)
    rows: list[tuple[list[str], bool]] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)  # headers that may be left out, least needed first
    left_out: list[str] = field(default_factory=list, init=False)  # those the last lines() left out

    def add_column(self, header: str, justify: Justify = "left") -> None:
        self.columns.append((header, justify))

    def add_row(self, *cells: str, bold: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)} columns")
        self.rows.append(([visible(c) for c in cells], bold))

    def fitted(self, width: int | None) -> tuple[list[int], list[int], list[str]]:
        """(kept column indices, their widths, headers left out) to fit ``width`` (None: no limit)."""
        heads = [h.split("\n") for h, _ in self.columns] if self.show_header else [[""] for _ in self.columns]
        natural = [max((len(text) for text in [*(cells[i] for cells, _ in self.rows), *heads[i]]), default=0)
                   for i in range(len(self.columns))]

        def least(i: int) -> int:  # a text column folds (a header word stays whole); a number never
            if self.columns[i][1] == "right" or not self.columns[i][0].strip() and self.show_header:
                return natural[i]
            word = max((len(w) for line in heads[i] for w in line.split()), default=0)
            return min(natural[i], max(FOLDED_TEXT_WIDTH, word))

        kept = list(range(len(self.columns)))

        def total(widths: Iterable[int]) -> int:
            return self.indent + sum(widths) + 2 * max(len(kept) - 1, 0)

        if width is None or total(natural[i] for i in kept) <= width:
            return kept, [natural[i] for i in kept], []
        dropped: list[str] = []
        for header in self.optional:
            if total(least(i) for i in kept) <= width:
                break
            index = next((i for i in kept if self.columns[i][0] == header), None)
            if index is not None:
                kept.remove(index)
                dropped.append(" ".join(header.split()))
        widths = [least(i) for i in kept]
        spare = width - total(widths)
        slack = [natural[i] - w for i, w in zip(kept, widths, strict=True)]
        if spare > 0 and sum(slack):  # share what is left in proportion to what each column would still take
            widths = [min(w + spare * s // sum(slack), natural[i]) for i, w, s in zip(kept, widths, slack, strict=True)]
        return kept, widths, dropped

    def lines(self, *, rule: str = "\u2500", width: int | None = None) -> list[tuple[str, bool]]:
        """The table as (line, bold) pairs, trailing spaces removed, fitted to ``width`` where it
        can be (see :meth:`fitted`; the headers left out are :attr:`left_out` after)."""
        kept, widths, self.left_out = self.fitted(width)
        columns = [self.columns[i] for i in kept]
        heads = [columns[k][0].split("\n") for k in range(len(kept))] if self.show_header else []
        heads = [[part for line in h for part in _fold(line, w)] for h, w in zip(heads, widths, strict=False)]
        depth = max((len(h) for h in heads), default=0)
        pad = " " * self.indent

        def line(cells: Sequence[str]) -> str:
            parts = [c.ljust(w) if just == "left" else c.rjust(w)
                     for c, w, (_, just) in zip(cells, widths, columns, strict=True)]
            return (pad + "  ".join(parts)).rstrip()

        out: list[tuple[str, bool]] = []
        if self.title:
            out += [(text, False) for text in (_fold(self.title, width) if width else [self.title])]
        if depth:
            for k in range(depth):  # bottom-aligned: a one-line name sits beside a two-line one's second line
                out.append((line([h[k - depth + len(h)] if k - depth + len(h) >= 0 else "" for h in heads]), False))
            out.append((rule * (self.indent + sum(widths) + 2 * max(len(widths) - 1, 0)), False))
        for cells, bold in self.rows:
            folded = [_fold(cells[i], w) if just == "left" else [cells[i]]
                      for i, w, (_, just) in zip(kept, widths, columns, strict=True)]
            for k in range(max(len(f) for f in folded) if folded else 1):
                out.append((line([f[k] if k < len(f) else "" for f in folded]), bold))
        return out


def print_lines(*tables: TextTable) -> None:
    """Print tables to stdout: bold rows bold on a terminal, plain text in a pipe."""
    from gmse_cli.cli import console

    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    unicode = encoding.startswith("utf")
    terminal = console.stdout_is_terminal()
    width = output_width()
    for table in tables:
        for text, bold in table.lines(rule="\u2500" if unicode else "-", width=width):
            text = text if unicode else text.replace("\u00b1", "+/-")  # an interval's half-width
            if terminal:
                console.out_console.print(text, style="bold" if bold else None, markup=False, highlight=False,
                                  soft_wrap=True)
            else:
                sys.stdout.write(text + "\n")
        if width is not None:
            sys.stdout.flush()
            note_left_out(table.left_out, width)


def print_flag(text: str) -> None:
    """One warning line under a table, marked '!' (yellow on a terminal)."""
    from gmse_cli.cli import console

    width = output_width()
    lines = textwrap.wrap(text, max(width - 2, 20), break_on_hyphens=False, break_long_words=False) if width else [text]
    if console.stdout_is_terminal():
        from rich.text import Text

        console.out_console.print(Text.assemble(("!", "yellow"), " ", lines[0]), highlight=False, soft_wrap=True)
        for more in lines[1:]:
            console.out_console.print("  " + more, highlight=False, markup=False, soft_wrap=True)
    else:
        sys.stdout.write("".join(f"{'!' if k == 0 else ' '} {more}\n" for k, more in enumerate(lines)))


def name_list(names: Sequence[str], noun: str = "rows") -> str:
    """The names a flag line is about: all of up to three, else how many ``noun`` and the first two."""
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} {noun} ({', '.join(names[:2])}, ...)"


def print_capacity_flags(named_reasons: Iterable[tuple[str, str | None]]) -> None:
    """One flag line per distinct reason a capacity is read beyond the law's fitted runs
    (``beyond_fitted_gmse``), naming its rows (each once); nothing when none is."""
    grouped: dict[str, list[str]] = {}
    for name, reason in named_reasons:
        if reason and name not in grouped.setdefault(reason, []):
            grouped[reason].append(name)
    for reason, names in grouped.items():
        print_flag(f"{name_list(names)}: capacity read beyond the law's fitted runs, {reason}")


def print_unrecorded_gmse(law: str) -> None:
    """The line that says no capacity could be flagged: law ``law`` records no stage GMSEs its
    curves were fitted at (``fitted_gmse_recorded`` false; a hand-written law may not)."""
    print_flag(f"law '{law}' records no fitted stage GMSEs ([fitted_range.gmse]): no capacity is flagged "
               "as read beyond the stages its curves were fitted at")
