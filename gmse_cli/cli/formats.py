"""`uscl formats`: the catalog, and any format resolved to its full spec."""

from __future__ import annotations

from typing import Annotated

import typer

from gmse_cli.grammar import SHORTHAND_HELP

_HELP = "List the shipped formats, or show one resolved to its full TOML spec.\n\n" + SHORTHAND_HELP.replace(
    "\n", "\n\n"
)


def register(app: typer.Typer) -> None:
    formats_app = typer.Typer(help=_HELP, invoke_without_command=True, rich_markup_mode=None)

    @formats_app.callback()
    def formats_list(
        ctx: typer.Context,
        family: Annotated[str | None, typer.Option(help="only this family (quantization, sparsity, vq, ...)")] = None,
        row_length: Annotated[int, typer.Option(help="row length for the amortized scale bits")] = 4096,
        json_out: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
    ) -> None:
        """List the catalog: name, family, bits/param, description."""
        if ctx.invoked_subcommand is not None:
            return
        from rich.table import Table

        from gmse_cli.cli.console import out_console, print_json
        from gmse_cli.spec import catalog

        rows = [
            (name, fmt.family, fmt.bits_per_param(row_length), fmt.describe())
            for name, fmt in catalog().items()
            if family is None or family.lower() in fmt.family.split("+")
        ]
        if json_out:
            print_json([
                {"name": n, "family": f, "bits_per_param": b, "description": d} for n, f, b, d in rows
            ])
            return
        table = Table(title=f"uscl formats ({len(rows)})", title_justify="left")
        for col, just in (("name", "left"), ("family", "left"), ("bits/param", "right"), ("description", "left")):
            table.add_column(col, justify=just, overflow="fold")
        for n, f, b, d in rows:
            table.add_row(n, f, f"{b:.4g}", d)
        out_console.print(table)

    @formats_app.command("show")
    def formats_show(
        name: Annotated[str, typer.Argument(help="catalog name, .toml path or shorthand")],
    ) -> None:
        """Print FORMAT resolved to its full spec, as TOML (accepted back by every command)."""
        import sys

        from gmse_cli.spec import format_to_toml, resolve_format

        sys.stdout.write(format_to_toml(resolve_format(name)))

    app.add_typer(formats_app, name="formats")
