"""`uscl gmse`: Gaussian MSE of formats with confidence intervals."""

from __future__ import annotations

from typing import Annotated

import typer

from gmse_cli.cli.console import FORMAT_EPILOG, RECOMPUTE_HELP
from gmse_cli.cli.options import CsvFlag, JsonFlag, RowLength, examples

_EPILOG = examples(
    "uscl gmse int4 nvfp4 mxfp4",
    "uscl gmse int4-g128-se4m3 --vs int4 --monte-carlo",
    "uscl gmse --all --csv > gmse.csv",
    notes=FORMAT_EPILOG,
)


def register(app: typer.Typer) -> None:
    @app.command("gmse", epilog=_EPILOG)
    def gmse_command(
        formats: Annotated[list[str] | None, typer.Argument(help="formats: catalog names, .toml files or shorthand", metavar="FORMAT...", show_default=False)] = None,
        all_formats: Annotated[bool, typer.Option("--all", help="the whole catalog")] = False,
        rel_err: Annotated[float, typer.Option(help="target relative standard error of Monte Carlo")] = 1e-3,
        seed: Annotated[int, typer.Option(help="seed of the shared Gaussian sample bank")] = 0,
        row_length: RowLength = 4096,
        exact: Annotated[
            bool | None,
            typer.Option("--exact/--monte-carlo", help="force quadrature or Monte Carlo (default: exact where it exists)"),
        ] = None,
        vs: Annotated[str | None, typer.Option(help="also report GMSE(format) - GMSE(VS) on common random numbers")] = None,
        backend: Annotated[str, typer.Option(help="numba (default), numpy (reference) or torch")] = "numba",
        device: Annotated[str, typer.Option(help="torch device for --backend torch (cpu, cuda)")] = "cpu",
        max_samples: Annotated[
            int, typer.Option(help="Gaussian elements per format at most (Monte Carlo stops there, though "
                              "never before the minimum a valid interval needs: 4 batches of 2^17, "
                              "32 where a statistic spans the tensor)")
        ] = 1 << 26,
        recompute: Annotated[bool, typer.Option("--recompute", help=RECOMPUTE_HELP)] = False,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """GMSE of each FORMAT: point estimate, 95% interval, effective bits = log_{1/4}(GMSE).

        Catalog formats are read from the table shipped with uscl, other formats from the cache of what this machine computed before (both at least as precise as --rel-err); the method column says which: table, cache, exact or monte-carlo. --recompute, --exact/--monte-carlo and --backend ask for the engine itself.
        """
        from gmse_cli.cli.options import one_output
        from gmse_cli.cli.output import print_json
        from gmse_cli.errors import SpecError, one_of
        from gmse_cli.gmse import SampleBank, backend_names, estimate_gmse
        from gmse_cli.spec import catalog, resolve_format

        one_output(json_out, csv_out)
        names = list(formats or [])
        if all_formats:
            names = list(catalog()) + names
        if not names:
            raise SpecError("name at least one format, or pass --all for the whole catalog")
        backend = one_of(backend, backend_names(), "--backend", SpecError)
        method = "auto" if exact is None else ("exact" if exact else "monte-carlo")
        resolved = [resolve_format(n) for n in names]
        reference = resolve_format(vs) if vs else None
        bank = SampleBank(seed=seed, row_length=row_length, backend=backend, device=device) if reference else None
        results = estimate_gmse(
            resolved, rel_err=rel_err, seed=seed, row_length=row_length, method=method,
            backend=backend, device=device, max_samples=max_samples, progress=True, bank=bank,
            cache="refresh" if recompute else "use",
        )
        diffs = [bank.difference(f, reference, rel_err=rel_err, max_samples=max_samples) for f in resolved] if bank else None
        _note_short(results, rel_err, max_samples)
        if json_out or csv_out:
            payload = [r.model_dump(mode="json") for r in results]
            for item, diff in zip(payload, diffs or [], strict=False):
                item["vs"] = diff.model_dump(mode="json")
            if json_out:
                print_json(payload)
            else:
                from gmse_cli.cli.output import print_csv

                print_csv(payload)
            return
        _render(results, diffs)

    def _note_short(results, rel_err: float, max_samples: int) -> None:
        """One stderr line when Monte Carlo stopped at the sample cap before reaching --rel-err
        (its interval is honest, only wider than asked)."""
        short = [r for r in results if r.gmse > 0 and r.std_err > rel_err * r.gmse * (1 + 1e-9)]
        if short:
            from gmse_cli.cli.console import err_console
            from gmse_cli.cli.texttable import name_list

            worst = max(r.std_err / r.gmse for r in short)
            drawn = max(r.samples for r in short)
            # A cap below the engine's minimum yields to it: say what was drawn, not the cap.
            where = (f"--max-samples {max_samples:,}" if drawn <= max_samples else
                     f"the minimum a valid interval needs, {drawn:,} samples (above --max-samples {max_samples:,})")
            err_console.print(
                f"note: {name_list([r.name for r in short], 'formats')}: Monte Carlo stopped at {where} "
                f"with a relative standard error up to {worst:.2g}, above --rel-err "
                f"{rel_err:g} (raise --max-samples for more)", highlight=False, soft_wrap=True,
            )

    def _render(results, diffs) -> None:
        from gmse_cli.cli import console

        columns = ["name", "bits/param", "GMSE", "95% CI", "eff. bits", "method", "samples"]
        if diffs:
            columns.append(f"minus {diffs[0].b} (paired 95% CI)")
        rows = []
        for i, r in enumerate(results):
            ci = f"[{r.ci_low:.5g}, {r.ci_high:.5g}]" if r.std_err > 0 else "exact"
            eff = f"{r.effective_bits:.3f}" if r.effective_bits is not None else "inf"
            row = [r.name, f"{r.bits_per_param:.4g}", f"{r.gmse:.5g}", ci, eff, r.method, f"{r.samples:,}"]
            if diffs:
                d = diffs[i]
                row.append(f"{d.difference:+.4g} [{d.ci_low:+.3g}, {d.ci_high:+.3g}]")
            rows.append(row)
        title = "Gaussian MSE (95% intervals)"
        justify = ["left" if col in ("name", "method") else "right" for col in columns]
        if console.stdout_is_terminal():  # rich fits the table to the terminal's width
            from gmse_cli.cli.table import Table

            table = Table(title=title, title_justify="left")
            for col, just in zip(columns, justify, strict=True):
                table.add_column(col, justify=just)
            for row in rows:
                table.add_row(*row)
            console.print_table(table)
            return
        from gmse_cli.cli.texttable import TextTable, print_lines

        text = TextTable(title)  # piped: plain columns, fitted to COLUMNS if set (and 0.1 s less than rich's layout)
        for col, just in zip(columns, justify, strict=True):
            text.add_column(col, just)
        text.optional = ["samples", "method", "eff. bits", "bits/param", "95% CI"]
        for row in rows:
            text.add_row(*row)
        print_lines(text)
