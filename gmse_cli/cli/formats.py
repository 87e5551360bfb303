"""`uscl formats`: the catalog, and any format resolved to its full spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gmse_cli.cli.console import FORMAT_EPILOG
from gmse_cli.cli.options import CsvFlag, JsonFlag, examples

_HELP = "List the shipped formats, or show one resolved to its full TOML spec."
_EPILOG = examples(
    "uscl formats",
    "uscl formats --family vq --json",
    "uscl formats show e2m1-g32-absmax-se8m0 > my-mxfp4.toml",
    notes=FORMAT_EPILOG,
)


def fitting(formats: list, row_length: int) -> list:
    """The ``formats`` whose groups, blocks and dimensions divide rows of ``row_length``; one
    stderr note names the others (a listing or ranking of the catalog leaves them out)."""
    from gmse_cli.errors import SpecError

    fit, unfit = [], []
    for fmt in formats:
        try:
            fmt.check_row_length(row_length)
            fit.append(fmt)
        except SpecError:
            unfit.append(fmt.display_name)
    if unfit:
        from gmse_cli.cli.console import err_console
        from gmse_cli.cli.texttable import name_list

        err_console.print(f"note: left out {name_list(unfit, 'formats')}: their groups, blocks or dimensions do not "
                          f"divide rows of {row_length}", highlight=False, soft_wrap=True)
    return fit


def register(app: typer.Typer) -> None:
    formats_app = typer.Typer(help=_HELP, epilog=_EPILOG, invoke_without_command=True)

    @formats_app.callback()
    def formats_list(
        ctx: typer.Context,
        family: Annotated[str | None, typer.Option(help="only this family (quantization, sparsity, vq, ...)")] = None,
        row_length: Annotated[int, typer.Option(help="row length for the amortized scale bits")] = 4096,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """List the catalog: name, family, bits/param, description."""
        if ctx.invoked_subcommand is not None:
            _list_options_unused(ctx)
            return
        from gmse_cli.cli.console import print_table
        from gmse_cli.cli.options import one_output
        from gmse_cli.cli.output import print_json
        from gmse_cli.cli.table import Table
        from gmse_cli.spec import catalog

        one_output(json_out, csv_out)
        listed = [f for f in catalog().values() if family is None or family.lower() in f.family.split("+")]
        rows = [(f.display_name, f.family, f.bits_per_param(row_length), f.describe()) for f in fitting(listed, row_length)]
        items = [{"name": n, "family": f, "bits_per_param": b, "description": d} for n, f, b, d in rows]
        if json_out:
            print_json(items, command="formats")
            return
        if csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv(items, command="formats")
            return
        table = Table(title=f"uscl formats ({len(rows)})", title_justify="left")
        for col, just in (("name", "left"), ("family", "left"), ("bits/param", "right"), ("description", "left")):
            table.add_column(col, justify=just)
        for n, f, b, d in rows:
            table.add_row(n, f, f"{b:.4g}", d)
        print_table(table)

    @formats_app.command("show", epilog=_EPILOG)
    def formats_show(
        name: Annotated[str, typer.Argument(help="catalog name, .toml path or shorthand", metavar="FORMAT")],
    ) -> None:
        """Print FORMAT resolved to its full spec, as TOML (accepted back by every command)."""
        import sys

        from gmse_cli.spec import format_to_toml, resolve_format

        sys.stdout.write(format_to_toml(resolve_format(name)))

    @formats_app.command("export", epilog=examples(
        "uscl formats export w4a16 --to compressed-tensors --out quantization_config.json",
        "uscl formats export aint4-g128 --to torchao",
    ))
    def formats_export(
        name: Annotated[str, typer.Argument(help="catalog name, .toml path or shorthand", metavar="FORMAT")],
        to: Annotated[str, typer.Option("--to", help="compressed-tensors or torchao")],
        output: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON here instead of stdout")] = None,
        old_output: Annotated[Path | None, typer.Option("--output", hidden=True)] = None,
    ) -> None:
        """Print FORMAT as a compressed-tensors quantization_config or a torchao config (JSON).

        An error names what the target cannot express (e.g. uscl's -7 ... 7 int4 grid; use w4a16).
        """
        import json

        from gmse_cli.cli.options import renamed
        from gmse_cli.inputs import is_file
        from gmse_cli.interop import export_format
        from gmse_cli.spec import resolve_format

        output = renamed("--output", "--out", old_output, output)
        if output is not None:
            from gmse_cli.atomic import check_output_path
            from gmse_cli.errors import DataError
            from gmse_cli.paths import catalog_dir

            # a format file is read alone; a catalog name or shorthand reads the catalog's files
            source = name.strip()
            inputs = [source] if is_file(source) else sorted(catalog_dir().glob("*.toml"))
            output = check_output_path(output, what="config file", error=DataError, inputs=inputs)
        text = json.dumps(export_format(resolve_format(name), to), indent=2) + "\n"
        _write(text, output)

    @formats_app.command("import", epilog=examples(
        "uscl formats import quantization_config.json --name my-w4 --out my-w4.toml",
        "uscl formats import config.json",
    ))
    def formats_import(
        path: Annotated[Path, typer.Argument(help="a JSON config: compressed-tensors (quantization_config, config.json, scheme or args) or torchao (config_to_dict)", metavar="CONFIG")],
        name: Annotated[str | None, typer.Option(help="the format's name (default: the file's stem)")] = None,
        output: Annotated[Path | None, typer.Option("--out", "-o", help="write the TOML here instead of stdout")] = None,
        old_output: Annotated[Path | None, typer.Option("--output", hidden=True)] = None,
    ) -> None:
        """Print the format a compressed-tensors or torchao config quantizes weights to, as
        TOML (accepted by every command)."""
        import json

        from gmse_cli.cli.options import renamed
        from gmse_cli.errors import DataError
        from gmse_cli.inputs import parse_nested, read_text_file, strict_json
        from gmse_cli.interop import import_config
        from gmse_cli.spec import format_to_toml

        output = renamed("--output", "--out", old_output, output)
        if output is not None:
            from gmse_cli.atomic import check_output_path

            output = check_output_path(output, what="format file", error=DataError, inputs=[path])
        # read as every input is: a regular UTF-8 file of bounded size and nesting (a FIFO never read)
        text = read_text_file(path, what="config", error=DataError)
        try:
            data = parse_nested(strict_json, text, where=str(path), error=DataError)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not JSON: {exc}") from None
        _write(format_to_toml(import_config(data, name=name or path.stem)), output)

    app.add_typer(formats_app, name="formats")


_LIST_OPTIONS = {"family": "--family", "row_length": "--row-length", "json_out": "--json", "csv_out": "--csv"}


def _list_options_unused(ctx: typer.Context) -> None:
    """Refuse the listing's own options before a subcommand (``uscl formats --json show int4``):
    they shape the catalog listing only, and ``show``, ``export`` and ``import`` print TOML or a
    config's JSON whatever they say, so a program that asked for --json would read TOML."""
    given = [flag for name, flag in _LIST_OPTIONS.items()
             if (source := ctx.get_parameter_source(name)) is not None and source.name != "DEFAULT"]
    if given:
        from gmse_cli.errors import SpecError

        what = "TOML" if ctx.invoked_subcommand in ("show", "import") else "a config's JSON"
        raise SpecError(f"{' and '.join(given)} shape{'s' if len(given) == 1 else ''} the catalog listing "
                        f"('uscl formats {given[0]}'), not 'formats {ctx.invoked_subcommand}', which prints {what}")


def _write(text: str, output: Path | None) -> None:
    import sys

    if output is None:
        sys.stdout.write(text)
    else:
        from gmse_cli.atomic import write_atomic
        from gmse_cli.errors import DataError

        try:
            write_atomic(output, text.encode())
        except OSError as exc:
            raise DataError(f"cannot write {output}: {exc.strerror or exc}") from None
