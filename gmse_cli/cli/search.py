"""`uscl search`: the format with the highest capacity at or below a bit budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gmse_cli.cli.console import RECOMPUTE_HELP
from gmse_cli.cli.options import CsvFlag, JsonFlag, RowLength, examples, paragraphs
from gmse_cli.limits import MAX_SEARCH_BITS

_EPILOG = """\
The space: int (midrise, signed, asymmetric), fp ExMy, Lloyd-Max and lookup-table grids (NF4)
x scale rule (rms, absmax, mse) x group (row, 256 ... 16) x scale format (fp32, bf16, e8m0,
e4m3); those quantizers after 2:4, 4:8, 1:4 or 10-50% magnitude sparsity; vector quantizers
of dimension 2, 4, 8 up to 256 codewords; the catalog formats. Capacity is the law's,
factorized over stages. Candidates are named in shorthand, so any name printed here can be
passed back to `uscl gmse`, `uscl rank` or `uscl mse`; --out writes each frontier member
as a TOML file as well. With --checkpoint the objective is the real-weight MSE of rows
sampled from the checkpoint's layers, and Hadamard-rotated variants join the space."""


def register(app: typer.Typer) -> None:
    @app.command("search", epilog=examples(
        "uscl search --bits 4.25",
        "uscl search --bits 3 --out frontier/ --plot search.png",
        "uscl search --bits 4.5 --checkpoint model.safetensors --json",
    ) + "\n\n" + paragraphs(_EPILOG))
    def search_command(
        bits: Annotated[float, typer.Option("--bits", help=f"budget in bits per parameter, above 0 and at most "
                                                        f"{MAX_SEARCH_BITS} (e.g. 4.25)")],
        law: Annotated[str | None, typer.Option("--law", help="law file or shipped law name (default: the shipped law)")] = None,
        rel_err: Annotated[float, typer.Option(help="target relative standard error of the reported GMSEs (comparisons are paired, so far tighter)")] = 3e-3,
        seed: Annotated[int, typer.Option(help="seed of the shared Gaussian sample bank (or of the row sample)")] = 0,
        row_length: RowLength = 4096,
        checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="optimize real-weight MSE on this safetensors checkpoint")] = None,
        include: Annotated[list[str] | None, typer.Option("--include", help="with --checkpoint: layers to use (glob or re:REGEX)", show_default="as uscl mse: every linear weight matrix")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", help="with --checkpoint: layers to leave out")] = None,
        rows_per_layer: Annotated[int, typer.Option(help="with --checkpoint: rows sampled per layer")] = 256,
        out_dir: Annotated[str | None, typer.Option("--out", help="write each frontier member as a format TOML into this folder", metavar="<path>")] = None,
        old_out_dir: Annotated[str | None, typer.Option("--out-dir", hidden=True)] = None,
        plot: Annotated[Path | None, typer.Option("--plot", help="write capacity vs bits with both frontiers (.png, .svg or .pdf)")] = None,
        recompute: Annotated[bool, typer.Option("--recompute", help=RECOMPUTE_HELP)] = False,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """Search the format space for the highest capacity at or below --bits; print the
        Pareto frontier (capacity vs bits/param) and how it beats each catalog format."""
        from gmse_cli.cli.console import drawing, err_console, wrote
        from gmse_cli.cli.options import one_output, renamed
        from gmse_cli.cli.output import print_json
        from gmse_cli.errors import SpecError
        from gmse_cli.figures import check_plot_path
        from gmse_cli.inputs import existing_files
        from gmse_cli.progress import task
        from gmse_cli.search import check_frontier_dir, plot_search, search_formats, write_frontier

        one_output(json_out, csv_out)
        out_dir = _out_folder(renamed("--out-dir", "--out", old_out_dir, out_dir))
        if rows_per_layer < 2:
            raise SpecError(f"--rows-per-layer {rows_per_layer} must be at least 2")
        if checkpoint is None and (include or exclude):
            raise SpecError("--include/--exclude select checkpoint layers; give --checkpoint too")
        if plot is not None:  # never over an input, nor the --out folder the search makes first
            plot = check_plot_path(plot, inputs=[*existing_files(checkpoint, law), *([out_dir] if out_dir else [])])
        if out_dir is not None:
            out_dir = check_frontier_dir(out_dir)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(detail=phase, completed=done, total=total)

        with task("search:", None) as bar:  # on stderr, with --json too
            result = search_formats(
                bits, law=law if law is not None else "default", rel_err=rel_err, seed=seed,
                checkpoint=checkpoint, include=include or (), exclude=exclude or (),
                rows_per_layer=rows_per_layer, progress=progress, cache="refresh" if recompute else "use",
                row_length=row_length,
            )
        left_out = (f"{result.left_out_by_law:,} left out (a family law '{result.law}' has no curve for), "
                    if result.left_out_by_law else "")
        err_console.print(
            f"{result.candidates:,} candidates at or below {bits:g} bits: {left_out}{result.pruned_by_bound:,} pruned "
            f"unmeasured by capacity bounds, {result.stages_measured:,} stage formats measured, "
            f"{result.refined:,} refined, in {result.seconds:.1f} s",
            highlight=False,
        )
        if out_dir is not None:
            paths = write_frontier(result, out_dir)
            wrote(f"{len(paths)} format files to", out_dir)
        if plot is not None:
            from gmse_cli.realmse import checkpoint_name

            with drawing(plot):
                plot_search(result, plot, checkpoint=checkpoint_name(checkpoint) if checkpoint else None)
            wrote("plot", plot)
        if json_out or csv_out:
            frontier = [p.model_dump(mode="json") for p in result.frontier]
            if csv_out:
                from gmse_cli.cli.output import print_csv

                print_csv(frontier, objective=result.objective)
                return
            dump = result.model_dump(mode="json", exclude={"frontier", "points"})
            print_json(frontier, **dump)
            return
        _render(result)


def _out_folder(text: str | None) -> Path | None:
    """--out as a path; an empty one (an unset shell variable) would be read as the current folder."""
    from gmse_cli.errors import SpecError

    if text is None:
        return None
    if not text.strip():
        raise SpecError("--out is empty: name the folder for the frontier's format files (e.g. --out found/)")
    return Path(text)


def _render(result) -> None:
    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table
    from gmse_cli.cli.texttable import print_capacity_flags, print_unrecorded_gmse

    error = "GMSE" if result.objective == "gaussian" else "MSE (real)"
    table = Table(title=f"Pareto frontier at or below {result.budget:g} bits/param (law {result.law})", title_justify="left")
    for col in ("format", "bits/param", error, "method", "rho", "+/- (1 se)", "source"):
        table.add_column(col, justify="left" if col in ("format", "method", "source") else "right")
    for p in result.frontier:
        table.add_row(p.name, f"{p.bits_per_param:.4f}", f"{p.gmse:.5g}", p.gmse_method, f"{p.rho:.4f}",
                      f"{p.rho_std_err:.1e}", p.source)
    print_table(table, optional=["source", "method", "+/- (1 se)"])
    b = result.best
    out_console.print(f"best at or below {result.budget:g} bits: {b.name} ({b.bits_per_param:.4f} bits/param, "
                      f"{error} {b.gmse:.5g}, rho {b.rho:.4f})", highlight=False)
    print_capacity_flags((p.name, p.beyond_fitted_gmse) for p in [b, *result.frontier])
    if not b.fitted_gmse_recorded:
        print_unrecorded_gmse(result.law)
    if not result.comparisons:
        return
    table = Table(title="Catalog formats vs the best searched format at the same or fewer bits", title_justify="left")
    for col in ("catalog", "bits", "rho", "best searched", "its bits", "its rho", "gain"):
        table.add_column(col, justify="left" if col in ("catalog", "best searched") else "right")
    for c in result.comparisons:
        table.add_row(c.catalog, f"{c.catalog_bits:.4f}", f"{c.catalog_rho:.4f}", c.best, f"{c.best_bits:.4f}",
                      f"{c.best_rho:.4f}",
                      f"{c.gain:+.4f}" + ("" if c.gain_relative is None else f" ({c.gain_relative:+.1%})"))
    print_table(table, optional=["its bits", "bits"])

