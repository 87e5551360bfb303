"""`uscl fit`: fit a scaling law to training runs and show the evidence that it predicts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from gmse_cli.cli.options import CsvFlag, JsonFlag, examples

_MODELS_HELP = (
    "dense (Chinchilla form), decoupled (one free capacity per scheme), unified (capacity from GMSE, "
    "the paper's law), capacity (curves through the decoupled capacities), kumar (precision law)"
)

_EPILOG = examples(
    "uscl fit runs.jsonl --model unified --bootstrap 100 --out my-law.toml",
    "uscl fit runs_for_scaling.json --model decoupled --where 'a_bits=16'",
    "uscl fit chinchilla_epoch_extracted.csv --model dense --exclude-worst 5",
    notes="FILES: `uscl train` results (JSON lines), QuEST's runs_for_scaling.json (a JSON list), or a "
    "CSV with columns N, D (or 'Training FLOP': D = FLOP / 6N), loss and optional weights / "
    "activations columns.\n\n"
    "--where KEY OP VALUE keeps matching runs (repeatable; all must hold). OP: = != < <= > >= "
    "~ (substring) !~. Keys: scheme, weights, activations, N, D, loss, w_bits, a_bits, "
    "tokens_per_param, source, and any metadata field (e.g. w_quant for QuEST runs). weights, "
    "activations and scheme match a format however the file spells it, as the fit pools them "
    "('weights=fp4' keeps the runs written e2m1 too). Examples: "
    "'w_bits=4', 'scheme~had', 'N>=1e8'.\n\n"
    "Fit error is the RMSE of log-loss, as the paper reports it. --out writes the law with the "
    "bootstrap's joint draws (so `uscl predict --law` intervals are joint) and, for families the "
    "runs say nothing about, the base law's curves with that provenance. --csv prints the "
    "constants table. chinchilla_epoch_extracted.csv above is Besiroglu et al.'s Chinchilla "
    "replication.",
)


def register(app: typer.Typer) -> None:
    @app.command("fit", epilog=_EPILOG)
    def fit_command(
        files: Annotated[list[Path], typer.Argument(help="runs files (uscl train JSON lines, QuEST JSON, CSV)", metavar="FILES")],
        model: Annotated[str, typer.Option("--model", "-m", help=_MODELS_HELP)] = "dense",
        huber_delta: Annotated[
            float | None, typer.Option(help="Huber threshold on log-loss residuals (default 1e-3; 1 = least squares)")
        ] = None,
        bootstrap: Annotated[int, typer.Option(help="bootstrap refits for intervals (resampling runs within schemes)")] = 0,
        where: Annotated[list[str] | None, typer.Option("--where", help="keep runs matching KEY OP VALUE (repeatable)")] = None,
        exclude_worst: Annotated[int, typer.Option(help="drop the K highest-loss runs of those --where keeps (ties at the cut go too)")] = 0,
        fix: Annotated[
            list[str] | None,
            typer.Option("--fix", help="hold a constant: NAME=VALUE (A, alpha, B, beta, E, quantization.L, gamma_w, ...)"),
        ] = None,
        law: Annotated[
            str | None, typer.Option(help="base law for families the runs cannot identify (default: the shipped law)")
        ] = None,
        out: Annotated[Path | None, typer.Option(help="write the fitted law (TOML) here")] = None,
        plot: Annotated[Path | None, typer.Option(help="write a plot (.png, .svg or .pdf): predicted vs observed, capacity vs GMSE")] = None,
        residuals: Annotated[bool, typer.Option("--residuals", help="print every run's residual")] = False,
        seed: Annotated[int, typer.Option(help="seed of the bootstrap and of Monte Carlo GMSE")] = 0,
        prior: Annotated[
            str | None, typer.Option(help="MAP fit with Gaussian priors: 'paper' (its Llama/C4 constants and sigmas)")
        ] = None,
        fit_outside: Annotated[
            bool, typer.Option("--fit-outside", help="also fit runs outside the law's domain (activations quantized "
                               "without rotation); by default unified, capacity and kumar fits only predict them")
        ] = False,
        weigh_schemes: Annotated[
            bool, typer.Option("--weigh-schemes", help="weigh each scheme's runs by 1/(its runs), so every scheme "
                               "counts the same in the fit and its refits (loss models; QuEST held out: 0.0042 "
                               "against 0.0041, with tanh curves 0.0048 against 0.0054)")
        ] = False,
        curve: Annotated[
            str | None, typer.Option(help="shape s of the capacity curves rho = L s(F bits)^C (unified, capacity): "
                                     "erf (default; QuEST held out: 0.0041) or tanh (the paper's; 0.0054; the "
                                     "default with --prior paper)")
        ] = None,
        heldout: Annotated[
            bool, typer.Option("--heldout/--no-heldout", help="held-out error: a cold refit without each scheme, "
                               "each GMSE group, and the largest model sizes (unified, capacity, kumar)")
        ] = True,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """Fit a scaling law to training runs: constants with bootstrap and profile intervals, capacities, fit
        error, residuals, held-out error (unified, capacity, kumar: leave one scheme out, leave one GMSE group
        out, predict the largest model sizes from the smaller; inside and outside the law's domain), capacity drift with N and D/N, and a factorization check
        (decoupled)."""
        from rich.markup import escape

        from gmse_cli.atomic import check_output_path
        from gmse_cli.cli.console import drawing, err_console, wrote
        from gmse_cli.cli.options import one_output
        from gmse_cli.cli.output import print_json
        from gmse_cli.errors import DataError, FitError, one_of
        from gmse_cli.figures import check_plot_path
        from gmse_cli.fit import MODELS, fit
        from gmse_cli.inputs import existing_files, printable_path
        from gmse_cli.law import load_law, save_law
        from gmse_cli.progress import status
        from gmse_cli.runs import RunsWarning, drop_duplicates, load_runs, select
        from gmse_cli.runs import exclude_worst as drop_worst

        one_output(json_out, csv_out)
        model = one_of(model, MODELS, "--model", FitError)
        if out is not None and model in ("decoupled", "kumar"):
            raise FitError(f"--out writes a law with capacity curves; a {model} fit has none (use --model unified or capacity)")
        read = [*files, *existing_files(law)]  # --law FILE is read too: no output may replace it
        if plot is not None:
            plot = check_plot_path(plot, inputs=read)
        if out is not None:
            out = check_output_path(out, what="law file", error=FitError, inputs=[*read, *([plot] if plot else [])])
        fixed = _parse_fix(fix or [])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RunsWarning)
            runs = load_runs(files)
        # Skipped runs (diverged, unfinished) and dropped copies: one line each on stderr, once
        # the fit stands, so that a bad --where, --law or fit after them is still one error line.
        notices = [f"[yellow]warning:[/] {escape(str(w.message))}" for w in caught]
        runs, copies = drop_duplicates(runs)
        if copies:  # a record pasted twice, or a file given twice: one run, or the intervals narrow
            copy, original = copies[0]
            # one file given twice: its line names both copies, so name the file instead
            first = (f"{copy.source} is given more than once" if copy.location == original.location
                     else f"the first: {copy.location}, a copy of {original.location}")
            notices.append(f"[yellow]note:[/] {len(copies)} exact duplicate run{'s' if len(copies) > 1 else ''} "
                           f"fitted once ({escape(first)})")
        if not runs:  # nothing to select from: the files say why (skipped runs), not --where
            skips = [w.message for w in caught if issubclass(w.category, RunsWarning)]
            skipped = f" ({len(skips)} skipped; the first: {skips[0]})" if skips else ""
            raise DataError(f"no runs to fit in {', '.join(printable_path(f) for f in files)}{skipped}")
        loaded = runs
        runs = select(runs, where or [])
        runs = drop_worst(runs, exclude_worst)
        if not runs:  # name the --where that keeps no run by itself, if one does
            alone = next((f"; --where '{e.strip()}' matches none of them" for e in where or [] if not select(loaded, [e])), "")
            raise DataError(f"no runs left after the selection ({len(loaded)} loaded{alone}); loosen --where / --exclude-worst")
        base_law = None
        if model in ("unified", "capacity"):
            base_law = load_law(law)
        # A bar on stderr (with --json too): a bootstrap or the Chinchilla points take seconds; the
        # held-out refits' own bar joins it as a row. In a log file, both are a few whole lines.
        with status(f"fitting {model} law to {len(runs)} runs"
                    + (f", {bootstrap} bootstrap refits" if bootstrap else "") + " ..."):
            result = fit(runs, model=model, huber_delta=huber_delta, bootstrap=bootstrap, seed=seed, fixed=fixed,
                         base_law=base_law, data_files=[str(f) for f in files], prior=prior,
                         fit_outside=fit_outside, weigh_schemes=weigh_schemes, loso=heldout,
                         progress=True, curve=curve)
        if (problem := result.law_problem()) is not None:
            raise FitError(problem)
        if copies:
            result = result.model_copy(update={"duplicates_dropped": len(copies)})
        if skipped := [str(w.message) for w in caught if issubclass(w.category, RunsWarning)]:
            result = result.model_copy(update={"runs_skipped": skipped})
        # validated before anything is written (a dense fit reads --law only here)
        law_out = result.to_law(printable_path(out.stem), base=base_law or load_law(law)) if out is not None else None
        for line in notices:
            err_console.print(line, highlight=False, soft_wrap=True)
        if plot is not None:
            from gmse_cli.fit import plot_fit, plot_panels

            with drawing(plot):
                plot_fit(result, plot, **plot_panels(result, runs, model=model, base_law=base_law,
                                                     huber_delta=huber_delta, bootstrap=bootstrap, seed=seed,
                                                     fixed=fixed, prior=prior, weigh_schemes=weigh_schemes,
                                                     fit_outside=fit_outside))
            wrote("plot", plot)
        if law_out is not None:
            save_law(law_out, out)
            wrote("law", out)
        if json_out:
            print_json(result.model_dump(mode="json"))
            return
        if csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv([{"constant": k, **c.model_dump(mode="json")} for k, c in result.constants.items()])
            return
        _render(result, residuals)


def _parse_fix(items: list[str]) -> dict[str, float]:
    from gmse_cli.errors import FitError

    fixed: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            fixed[name.strip()] = float(value)
        except ValueError:
            raise FitError(f"--fix '{item}' is not NAME=VALUE (e.g. --fix alpha=0.13)") from None
    return fixed


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _render(result, show_residuals: bool) -> None:
    import numpy as np
    from rich.text import Text

    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table

    out_console.print(
        f"[bold]{result.model}[/] fit: {result.n_runs} runs"
        + (f" ({result.n_fitted} fitted)" if result.n_fitted not in (None, result.n_runs) else "")
        + f", {result.n_schemes} schemes, Huber delta "
        f"{result.huber_delta:g}, {result.starts} starts, {result.bootstrap} bootstrap refits"
    )
    if result.fitted_range is not None:
        out_console.print(f"fitted on {result.fitted_range.describe()}: a law from this fit flags predictions "
                          "beyond them", highlight=False)
    table = Table(title="Constants (95% intervals: bootstrap; profile likelihood)", title_justify="left")
    for col in ("constant", "value", "sigma", "bootstrap 95%", "profile 95%", "source"):
        # a constant's name whole ("quantization.L"): the source column wraps instead
        width = max(map(len, result.constants), default=0) if col == "constant" else None
        table.add_column(col, justify="left" if col in ("constant", "source") else "right", min_width=width)
    for name, c in result.constants.items():
        interval = f"[{_fmt(c.low)}, {_fmt(c.high)}]" if c.low is not None else "-"
        prof = f"[{_fmt(c.profile_low)}, {_fmt(c.profile_high)}]" if c.profile_low is not None else "-"
        source = Text.assemble(c.source, (" (at a bound)", "yellow")) if c.at_bound else c.source
        table.add_row(name, _fmt(c.value, 5), _fmt(c.sigma, 3), interval, prof, source)
    print_table(table, optional=["sigma", "profile 95%"])
    if result.prior:
        out_console.print(f"prior: {result.prior}", markup=False)
    if result.scheme_weighted:
        out_console.print("weights: each scheme's runs 1/(its runs), so every scheme counts the same")
    out_console.print(f"fit error (RMSE of log-loss): [bold]{result.fit_error:.4g}[/]"
                      + (f"   capacity curves: RMSE of rho {result.capacity_fit_error:.4g}"
                         if result.capacity_fit_error is not None else ""))

    if result.capacities:
        cap = Table(title="Capacities", title_justify="left")
        cols = ["scheme", "runs", "rho", "95% interval"]
        alt = any(c.rho_alt_delta is not None for c in result.capacities)
        gm = any(c.stage_gmse for c in result.capacities)
        if alt:
            cols.append("rho, other delta")
        if gm:
            cols.append("stage GMSE")
        for col in cols:
            cap.add_column(col, justify="left" if col in ("scheme", "stage GMSE") else "right")
        for c in result.capacities:
            row = [c.scheme + (" (reference)" if c.reference else ""), str(c.n_runs), f"{c.rho:.4f}",
                   f"[{c.rho_low:.3f}, {c.rho_high:.3f}]" if c.rho_low is not None else "-"]
            if alt:
                row.append(_fmt(c.rho_alt_delta))
            if gm:
                row.append(", ".join(f"{f[:5]} {g:.3g}" for f, g in c.stage_gmse or []))
            cap.add_row(*row)
        print_table(cap, optional=["rho, other delta", "runs"])

    if result.families:
        fam = Table(title="Capacity curves rho = L s(F log_1/4 GMSE)^C", title_justify="left")
        for col in ("family", "s", "L", "F", "C", "distinct GMSE", "status"):
            fam.add_column(col, justify="left" if col in ("family", "s", "status") else "right")
        for name, f in result.families.items():
            fam.add_row(name, f.shape, f"{f.L:.4f}", f"{f.F:.4f}", f"{f.C:.4f}", str(f.n_gmse),
                        "held" if f.held else "fitted")
        print_table(fam, optional=["status", "distinct GMSE"])

    _render_heldout(result)
    _render_drift(result)

    fact = result.factorization
    if fact is not None:
        if fact.cells:
            ft = Table(title="Factorization: rho(W, A) vs rho(W) * rho(A)", title_justify="left")
            for col in ("weights", "activations", "rho", "rho(W)", "rho(A)", "product", "error"):
                ft.add_column(col, justify="left" if col in ("weights", "activations") else "right")
            for c in fact.cells:
                ft.add_row(c.weights, c.activations + (" (tied)" if c.tied else ""), f"{c.rho:.4f}",
                           f"{c.rho_weights:.4f}", f"{c.rho_activations:.4f}", f"{c.product:.4f}", f"{c.error:+.4f}")
            print_table(ft, optional=["rho(W)", "rho(A)"])
            out_console.print(f"factorization RMS error {fact.rms_error:.4f}, max {fact.max_abs_error:.4f} "
                              "(the paper reports about 1e-2)")
        if fact.rank1_rms is not None:
            out_console.print(f"rank-1 fit of the W x A grid: RMS {fact.rank1_rms:.4f} ({fact.rank1_dof} degrees of freedom)")
        elif fact.note:
            out_console.print(f"rank-1 check: {fact.note}")

    by_scheme: dict[str, list[float]] = {}
    fitted: dict[str, bool] = {}
    for r in result.residuals:
        by_scheme.setdefault(r.scheme, []).append(r.residual)
        fitted[r.scheme] = r.fitted
    rt = Table(title="Residuals by scheme (the full fit): log(predicted) - log(observed)", title_justify="left")
    for col in ("scheme", "runs", "fitted", "mean", "RMSE", "max |r|"):
        rt.add_column(col, justify="left" if col in ("scheme", "fitted") else "right")
    for scheme, vals in by_scheme.items():
        v = np.asarray(vals)
        rt.add_row(scheme, str(len(v)), "yes" if fitted[scheme] else "no (outside)", f"{v.mean():+.4f}",
                   f"{np.sqrt(np.mean(v**2)):.4f}", f"{np.abs(v).max():.4f}")
    print_table(rt, optional=["max |r|", "fitted", "runs"])
    if show_residuals:
        full = Table(title="Residuals by run", title_justify="left")
        for col in ("scheme", "N", "D", "loss", "predicted", "residual", "rho"):
            full.add_column(col, justify="left" if col == "scheme" else "right")
        for r in result.residuals:
            full.add_row(r.scheme, f"{r.N:.4g}", f"{r.D:.4g}", f"{r.loss:.4f}", f"{r.predicted:.4f}",
                         f"{r.residual:+.4f}", f"{r.rho:.4f}")
        print_table(full, optional=["rho"])
    for note in result.notes:
        out_console.print(f"note: {note}", highlight=False, markup=False)


def _render_heldout(result) -> None:
    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table

    if result.heldout_schemes is None:
        return
    reports = [result.heldout_schemes]
    if any(len(e.schemes) > 1 for e in result.heldout_groups.entries):  # else the same partition as schemes
        reports.append(result.heldout_groups)
    if result.heldout_scales is not None:
        reports.append(result.heldout_scales)
    for rep in reports:
        if rep.split == "scale":
            title = (f"Held out: every run at N >= {rep.n_cut:.4g} (the largest model sizes), predicted by one cold "
                     "refit on the smaller models")
        else:
            what = "scheme" if rep.split == "scheme" else "GMSE group (schemes sharing their stage GMSEs)"
            title = f"Held out: a cold refit without each {what}, predicting it from its GMSE"
        t = Table(title=title, title_justify="left")
        for col in ("held out", "runs", "domain", "RMSE log-loss", "bias", "rho (all runs)", "rho (held out)", "refit"):
            t.add_column(col, justify="left" if col in ("held out", "domain", "refit") else "right")
        for e in rep.entries:
            t.add_row(e.name, str(e.n_runs), "inside" if e.inside else "outside", _fmt(e.rmse), _signed(e.bias),
                      _fmt(e.rho_full), _fmt(e.rho_heldout), e.refit + (f": {e.note}" if e.note else ""))
        print_table(t, optional=["refit", "domain", "runs", "bias"])
    s, g, n = result.heldout_schemes, result.heldout_groups, result.heldout_scales
    scale = ("the largest model sizes: fewer than 4 fitted sizes" if n is None else
             f"the largest model sizes [bold]{_fmt(n.rmse_inside)}[/] ({n.n_inside} runs)")
    out_console.print(
        f"held-out RMSE of log-loss inside the law's domain: leave one scheme out [bold]{_fmt(s.rmse_inside)}[/] "
        f"({s.n_inside} runs{_over_parts(s, 'schemes')}), leave one GMSE group out [bold]{_fmt(g.rmse_inside)}[/] "
        f"({g.n_inside} runs{_over_parts(g, 'groups')}), "
        f"{scale}; outside the domain [bold]{_fmt(s.rmse_outside)}[/] ({s.n_outside} runs); fit error "
        f"(in-sample) {result.fit_error:.4g}", highlight=False)


def _over_parts(report, parts: str) -> str:
    """', 95% 0.0041-0.0071 over its schemes' when the report has an interval over its parts."""
    if report.rmse_inside_low is None:
        return ""
    return f", 95% {_fmt(report.rmse_inside_low)}-{_fmt(report.rmse_inside_high)} drawing the {parts} again"


def _render_drift(result) -> None:
    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table

    d = result.drift
    if d is None:
        return
    slopes = "; ".join(f"{s.regressor} {s.slope:+.4f} [{s.low:+.4f}, {s.high:+.4f}]" for s in d.slopes) or "-"
    out_console.print(f"capacity drift, log(implied rho / fitted rho) per unit of (95% interval, {d.n_runs} runs, "
                      f"{d.n_schemes} schemes, within-scheme): {slopes}", highlight=False)
    rows = [e for e in d.schemes if e.slope_log_n is not None]
    if rows:
        t = Table(title="Capacity drift by scheme: log(implied rho / fitted rho) against log N", title_justify="left")
        for col in ("scheme", "runs", "mean log ratio", "slope on log N", "95% interval"):
            t.add_column(col, justify="left" if col == "scheme" else "right")
        for e in rows:
            t.add_row(e.scheme, str(e.n_runs), f"{e.log_ratio_mean:+.4f}", f"{e.slope_log_n:+.4f}",
                      f"[{e.low:+.4f}, {e.high:+.4f}]" if e.low is not None else "-")
        print_table(t, optional=["mean log ratio", "runs"])


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"
