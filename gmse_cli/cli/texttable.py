"""Compact text tables for the commands people run most (`rank`, `predict`, `gmse`).

A title line, a header (a cell may span two lines: values narrower than their name keep the
column narrow), a rule, then the rows: two spaces between columns, no frame, nothing folded or
cut. Rich's Table lays out the same 80 rows in about 80 ms, a sixth of a warm `uscl rank`; this
writer takes about 2 ms. On a terminal, rows marked bold are printed bold (through the shared
console, so NO_COLOR and dumb terminals are respected); piped, the text is plain.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["TextTable", "print_lines", "print_flag", "name_list", "print_capacity_flags"]

Justify = Literal["left", "right"]


@dataclass
class TextTable:
    """Columns of (header, justify); header lines split at '\\n' and sit on the bottom line."""

    title: str | None = None
    columns: list[tuple[str, Justify]] = field(default_factory=list)
    show_header: bool = True
    indent: int = 0  # spaces before the first column (a header-less list of label: value pairs)
    rows: list[tuple[list[str], bool]] = field(default_factory=list)

    def add_column(self, header: str, justify: Justify = "left") -> None:
        self.columns.append((header, justify))

    def add_row(self, *cells: str, bold: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)} columns")
        self.rows.append(([str(c) for c in cells], bold))

    def lines(self, *, rule: str = "\u2500") -> list[tuple[str, bool]]:
        """The table as (line, bold) pairs, trailing spaces removed."""
        heads = [h.split("\n") for h, _ in self.columns] if self.show_header else []
        depth = max((len(h) for h in heads), default=0)
        widths = [max((len(text) for text in [*(cells[i] for cells, _ in self.rows), *(heads[i] if heads else [])]),
                      default=0) for i in range(len(self.columns))]
        pad = " " * self.indent

        def line(cells: Sequence[str]) -> str:
            parts = [c.ljust(w) if just == "left" else c.rjust(w)
                     for c, w, (_, just) in zip(cells, widths, self.columns, strict=True)]
            return (pad + "  ".join(parts)).rstrip()

        out: list[tuple[str, bool]] = []
        if self.title:
            out.append((self.title, False))
        if depth:
            for k in range(depth):  # bottom-aligned: a one-line name sits beside a two-line one's second line
                out.append((line([h[k - depth + len(h)] if k - depth + len(h) >= 0 else "" for h in heads]), False))
            out.append((rule * (self.indent + sum(widths) + 2 * max(len(widths) - 1, 0)), False))
        out += [(line(cells), bold) for cells, bold in self.rows]
        return out


def print_lines(*tables: TextTable) -> None:
    """Print tables to stdout: bold rows bold on a terminal, plain text in a pipe."""
    from gmse_cli.cli import console

    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    unicode = encoding.startswith("utf")
    terminal = console.stdout_is_terminal()
    for table in tables:
        for text, bold in table.lines(rule="\u2500" if unicode else "-"):
            text = text if unicode else text.replace("\u00b1", "+/-")  # an interval's half-width
            if terminal:
                console.out_console.print(text, style="bold" if bold else None, markup=False, highlight=False,
                                  soft_wrap=True)
            else:
                sys.stdout.write(text + "\n")


def print_flag(text: str) -> None:
    """One warning line under a table, marked '!' (yellow on a terminal)."""
    from gmse_cli.cli import console

    if console.stdout_is_terminal():
        from rich.text import Text

        console.out_console.print(Text.assemble(("!", "yellow"), " ", text), highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(f"! {text}\n")


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
