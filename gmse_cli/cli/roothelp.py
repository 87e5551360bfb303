"""`uscl --help` (and `uscl` alone): the command listing, drawn with rich's own parts.

Typer draws help through its rich_utils module, which imports rich's Markdown and traceback
renderers (markdown-it, pygments, attrs) at the top: 0.09 s of a 0.25 s `uscl --help`, for a
page with no Markdown and no traceback. The page is laid out as Typer lays it out: the usage
line, the description (its first paragraph plain, the rest dim), then an Options panel and a
Commands panel. Each command's own `--help` is still Typer's.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["print_group_help"]


def _rows(group: Any, ctx: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(options, commands) of ``group`` (a click group: click's own or Typer's vendored copy) as
    (name, help) pairs, in the order click lists them."""
    options = []
    for param in group.get_params(ctx):
        if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False):
            options.append((", ".join(param.opts), param.help or ""))
    commands = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            commands.append((name, command.short_help or command.help or ""))
    return options, commands


def print_group_help(group: Any, *, prog: str) -> None:
    """Print ``group``'s help page to stdout (80 columns when piped, the terminal's otherwise)."""
    from rich import box
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.text import Text

    from gmse_cli.cli import console
    from gmse_cli.cli.table import Table

    ctx = group.context_class(group, info_name=prog)
    options, commands = _rows(group, ctx)
    out = console.out_console if console.stdout_is_terminal() else Console(file=sys.stdout, width=80)

    def panel(title: str, rows: list[tuple[str, str]]) -> Panel:
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(ratio=1)
        for name, text in rows:
            table.add_row(name, Text(text))
        return Panel(table, title=title, title_align="left", border_style="dim", box=box.ROUNDED)

    usage = Text.assemble(("Usage: ", "yellow"), (f"{prog} [OPTIONS] COMMAND [ARGS]...", "bold"))
    paragraphs = [p for p in (group.help or "").split("\n\n") if p.strip()]
    parts = [Padding(usage, (1, 1, 1, 1))]
    parts += [Padding(Text(p, style="" if i == 0 else "dim"), (0, 1, 1, 1)) for i, p in enumerate(paragraphs)]
    parts += [panel("Options", options), panel("Commands", commands)]
    out.print(Group(*parts), highlight=False)
