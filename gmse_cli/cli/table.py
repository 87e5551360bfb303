"""The tables every command prints: rich's, with each text cell shown as written.

A format, run or layer name read from a file is printed in a cell; an escape character in it
would otherwise recolour the terminal, move the cursor or clear the screen, and a bracket in it
(``run[/b]``) was read as rich markup (a MarkupError traceback, or a name restyled).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table as RichTable

from gmse_cli.errors import visible

__all__ = ["Table"]


class Table(RichTable):
    """:class:`rich.table.Table` whose text cells pass through :func:`~gmse_cli.errors.visible`
    and are never read as markup (a styled cell is given as a :class:`rich.text.Text`)."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(escape(visible(c)) if isinstance(c, str) else c for c in renderables), **kwargs)
