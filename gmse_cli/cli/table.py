"""The tables every command prints: rich's, with control characters in cells shown as escapes.

A format, run or layer name read from a file is printed in a cell; an escape character in it
would otherwise recolour the terminal, move the cursor or clear the screen.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table as RichTable

from gmse_cli.errors import visible

__all__ = ["Table"]


class Table(RichTable):
    """:class:`rich.table.Table` whose text cells pass through :func:`~gmse_cli.errors.visible`."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(visible(c) if isinstance(c, str) else c for c in renderables), **kwargs)
