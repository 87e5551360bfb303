"""`uscl rank` and `uscl predict`: capacity, effective parameters and predicted loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from gmse_cli.cli.console import FORMAT_EPILOG, RECOMPUTE_HELP
from gmse_cli.cli.options import ActFormat, CsvFlag, JsonFlag, RowLength, examples, grouped
from gmse_cli.cli.texttable import TextTable, print_lines
from gmse_cli.cli.trust import print_trust_flags
from gmse_cli.counts import likely_meant, parse_count, parse_per_param, si

_PARAMS_HELP = "N, non-embedding parameters: 200e6, 200M, 1.5B"
_TOKENS_HELP = "D, training tokens: 20e9, 20B, or tokens per parameter as 100x"
_LAW_HELP = "law file (.toml, e.g. from uscl fit --out) or shipped law name (paper-llama-c4, quest-c4)"
_DRAWS_HELP = (
    "Monte Carlo draws of the law's constants behind every interval (rows of the law's joint draws where it "
    "has them)"
)
_VARY_L_HELP = (
    "also draw each capacity curve's L from its marginal where the law's joint draws do not carry it "
    "(held by default: L is not identified apart from A)"
)


_RANK_EPILOG = examples(
    "uscl rank int4 nvfp4 mxfp4 2:4+int4",
    "uscl rank --params 1.5B --tokens 20x --act int8 --family quantization",
    "uscl rank --law my-law.toml --plot rank.png --csv > ranking.csv",
    notes=FORMAT_EPILOG,
)
_PREDICT_EPILOG = examples(
    "uscl predict int4",
    "uscl predict had128+2:4x2+int4-allstats --params 800M --tokens 100x",
    "uscl predict nvfp4 --act nvfp4 --law my-law.toml --json",
    notes=FORMAT_EPILOG,
)


def _count(text: str, option: str) -> float:
    """'200e6', '200M', '1.5B' -> a positive float; anything else is one clear line."""
    from gmse_cli.errors import LawError

    value = parse_count(text)
    if value is None:
        # --tokens also takes tokens per parameter: say so where that is the form a user meant
        per_param = " (or tokens per parameter, 100x)" if option == "--tokens" else ""
        raise LawError(f"{option} '{text}' is not a positive count; write e.g. 200e6, 200M or 1.5B{per_param}")
    if not value > 0:
        raise LawError(f"{option} {text} must be positive (e.g. 200e6)")
    if (meant := likely_meant(text)) is not None:
        from gmse_cli.messages import warning

        # allowed (a count is a count), but 7 parameters is far more likely a slip for 7B
        what = "parameters" if option == "--params" else "tokens"
        ratio = f", or {text.strip()}x for tokens per parameter" if option == "--tokens" else ""
        written, scale = meant
        warning(f"{option} {text.strip()} is {text.strip()} {what}; for {written[:-1]} {scale} write "
                f"{option} {written}{ratio}")
    return value


def _no_counts(texts: list[str]) -> None:
    """Refuse a count where a format goes ('uscl rank int4 7B', '... 100x'), naming the option
    it belongs to: it was "unknown format '7b'", as if a format were misspelled."""
    from gmse_cli.errors import SpecError
    from gmse_cli.inputs import is_file

    for text in texts:
        if is_file(text):
            continue
        if parse_per_param(text) is not None:
            raise SpecError(f"'{text.strip()}' is tokens per parameter, not a format: give it as --tokens {text.strip()}")
        if parse_count(text) is not None:
            raise SpecError(f"'{text.strip()}' is a count, not a format: give it as --params {text.strip()} "
                            f"or --tokens {text.strip()}")


def _scale(params: str, tokens: str | None) -> tuple[float, float | None]:
    from gmse_cli.errors import LawError

    n = _count(params, "--params")
    if tokens is None:
        from gmse_cli.rank import DEFAULT_TOKENS_PER_PARAM

        # the default D is a ratio too: name --params where it overflows, not a "tokens" never given
        if not math.isfinite(DEFAULT_TOKENS_PER_PARAM * n):
            raise LawError(f"--params {params.strip()}: {DEFAULT_TOKENS_PER_PARAM:g} tokens per parameter (the "
                           "default --tokens) overflows; give --tokens")
        return n, None
    if (ratio := parse_per_param(tokens)) is not None:
        if not ratio > 0:
            raise LawError(f"--tokens {tokens} must be positive (e.g. 100x or 20e9)")
        # a ratio must still give a finite count of at least one token, as a count must
        if not 1 <= ratio * n < math.inf:
            raise LawError(f"--tokens {tokens.strip()} at --params {params.strip()} gives {ratio * n:g} tokens; "
                           "D must be a finite count of at least 1")
        return n, ratio * n
    return n, _count(tokens, "--tokens")


def _draws(text: str | None) -> int:
    """'--draws 500' -> 500 (its range is the law's check); parsed here so a typo is one clear line."""
    from gmse_cli.cli.validators import is_whole_number_text
    from gmse_cli.errors import LawError
    from gmse_cli.law import DEFAULT_DRAWS

    if text is None:
        return DEFAULT_DRAWS
    try:
        if not is_whole_number_text(text):
            raise ValueError(text)
        return int(text.strip())
    except ValueError:
        raise LawError(f"--draws '{text}' is not a whole number of Monte Carlo draws (e.g. 2000)") from None


def _si(x: float | None, unit: str = "") -> str:
    return "inf" if x is None else si(x, unit)


def _bytes(x: float | None) -> str:
    return "inf" if x is None else _si(x, "B")


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "inf" if x is None else format(x, fmt)


def _span(value: float | None, low: float | None, high: float | None, fmt: str = ".3g", signed: bool = False) -> str:
    sign = "+" if signed else ""
    if value is None:
        return "inf"
    return f"{value:{sign}{fmt}} [{_num(low, sign + fmt)}, {_num(high, sign + fmt)}]"


@dataclass(frozen=True)
class Scenario:
    """What rank and predict share: the model, the law, and how GMSE and intervals are made."""

    params: Annotated[str, typer.Option(help=_PARAMS_HELP)] = "200e6"
    tokens: Annotated[str | None, typer.Option(help=_TOKENS_HELP, show_default="100x")] = None
    act: ActFormat = None
    law: Annotated[str | None, typer.Option(help=_LAW_HELP, show_default="paper-llama-c4")] = None
    rel_err: Annotated[float, typer.Option(help="target relative standard error of Monte Carlo GMSE")] = 1e-3
    seed: Annotated[int, typer.Option(help="seed of the GMSE sample bank and of the interval draws")] = 0
    row_length: RowLength = 4096
    level: Annotated[float, typer.Option(help="coverage of the intervals")] = 0.95
    draws: Annotated[str | None, typer.Option(help=_DRAWS_HELP, metavar="<int>", show_default="2000")] = None
    vary_L: Annotated[bool, typer.Option("--vary-L", help=_VARY_L_HELP)] = False
    recompute: Annotated[bool, typer.Option("--recompute", help=RECOMPUTE_HELP)] = False

    def scale(self) -> tuple[float, float | None]:
        """(N, D) from --params and --tokens (D None: the library's default tokens per parameter)."""
        return _scale(self.params, self.tokens)

    def keywords(self) -> dict[str, Any]:
        """The keywords :func:`gmse_cli.rank.rank` and :func:`~gmse_cli.rank.predict` take from here."""
        return dict(act=self.act, rel_err=self.rel_err, seed=self.seed, row_length=self.row_length,
                    level=self.level, draws=_draws(self.draws), vary_L=self.vary_L,
                    cache="refresh" if self.recompute else "use")


def register(app: typer.Typer) -> None:
    @app.command("rank", epilog=_RANK_EPILOG)
    @grouped
    def rank_command(
        formats: Annotated[
            list[str] | None,
            typer.Argument(help="formats: catalog names, .toml files or shorthand", metavar="FORMAT...",
                           show_default="the catalog"),
        ] = None,
        scenario: Scenario = Scenario(),
        sort: Annotated[
            str, typer.Option(help="column to sort by (any JSON key); more-is-better columns sort descending")
        ] = "memory_to_match_bytes",
        reverse: Annotated[bool, typer.Option("--reverse", help="flip the sort order")] = False,
        family: Annotated[
            str | None, typer.Option(help="only formats with a stage of this family: quantization, sparsity, vq")
        ] = None,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
        plot: Annotated[
            str | None, typer.Option(help="also draw rho vs GMSE and rho vs bits/param to FILE (.png, .svg or .pdf)",
                                     metavar="<path>")
        ] = None,
        wide: Annotated[
            bool, typer.Option("--wide", help="every column (default: the ones to decide on, in 120 columns)")
        ] = False,
    ) -> None:
        """Rank formats by capacity, effective parameters, predicted loss and the memory to match bf16.

        One row per FORMAT (default: the catalog): bits/param, GMSE with its 95% interval, effective bits, capacity rho with its interval from the law's uncertainties, effective parameters N*rho, predicted loss and its difference from the dense bf16 model at --params/--tokens, the parameters a format needs to match that model (N/rho) and the memory they take (N/rho * bits/param).

        * marks the Pareto frontier: no other format has at most its bits and at least its rho, one of them strictly. ! marks a scheme outside the law's validated domain (activations quantized without rotation, or sparsified), with the published evidence beside it.
        """
        from gmse_cli.cli import console
        from gmse_cli.cli.formats import fitting
        from gmse_cli.cli.options import one_output
        from gmse_cli.errors import SpecError
        from gmse_cli.inputs import existing_files
        from gmse_cli.law import load_law
        from gmse_cli.rank import check_plot_path, plot_rank, rank, select_formats, sort_rows
        from gmse_cli.spec import Family

        one_output(json_out, csv_out)
        _no_counts(formats or [])
        n, d = scenario.scale()
        # a format or law file (any name: a .toml suffix is not required) is never the plot's target
        read = existing_files(*(formats or []), scenario.act, scenario.law)
        plot_path = check_plot_path(plot, inputs=read) if plot is not None else None  # '' is refused, not skipped
        the_law = load_law(scenario.law)
        # a family in any case (the parser checked it: validators)
        wanted = Family(family.strip().lower()) if family is not None else None
        items, uncovered = select_formats(formats, law=the_law, family=wanted)
        if not formats:  # the catalog: leave out what rows of --row-length cannot split, as `formats` does
            items = fitting(items, scenario.row_length)
        if uncovered:
            missing = sorted({fam.value for f in uncovered for fam in f.families if fam not in the_law.families})
            console.err_console.print(
                f"skipping {len(uncovered)} catalog formats of families law '{the_law.name}' does not "
                f"cover ({', '.join(missing)})"
            )
        if wanted is not None and not items:
            raise SpecError(f"no format of family '{wanted}' to rank")
        rows = rank(
            items, law=the_law, params=n, tokens=d, **scenario.keywords(),
            progress=True,  # a log gets whole lines, and nothing for the instant answer (under 0.5 s)
        )
        rows = sort_rows(rows, sort.strip().lower(), reverse=reverse)
        if plot_path is not None:
            with console.drawing(plot_path):
                plot_rank(rows, plot_path, law=the_law)
            console.wrote("plot", plot_path)
        if json_out:
            from gmse_cli.cli.output import print_json

            print_json([r.model_dump(mode="json") for r in rows])
        elif csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv([r.model_dump(mode="json") for r in rows])
        else:
            print_lines(rank_table(rows, wide=wide))
            print_trust_flags(rows, the_law, vary_L=scenario.vary_L)

    @app.command("predict", epilog=_PREDICT_EPILOG)
    @grouped
    def predict_command(
        format: Annotated[str, typer.Argument(help="catalog name, .toml file or shorthand", metavar="FORMAT")],
        scenario: Scenario = Scenario(),
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """The law's prediction for one FORMAT: each stage's GMSE and capacity, their product, and the loss terms A (N rho)^-alpha + B D^-beta + E at --params N and --tokens D."""
        from gmse_cli.cli.options import one_output
        from gmse_cli.law import load_law
        from gmse_cli.rank import predict

        one_output(json_out, csv_out)
        _no_counts([format])
        n, d = scenario.scale()
        the_law = load_law(scenario.law)
        pred = predict(format, n, d, the_law, **scenario.keywords())
        if json_out:
            from gmse_cli.cli.output import print_json

            print_json(pred.model_dump(mode="json"))
            return
        if csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv([pred.model_dump(mode="json")])
            return
        print_lines(*prediction_tables(pred, the_law))
        print_trust_flags([pred], the_law, vary_L=scenario.vary_L)


def _gmse(value: float, low: float, high: float, wide: bool) -> str:
    """GMSE with its 95% interval: in full when wide, else as a relative half-width."""
    if low == high:
        return f"{value:.5g}"
    if wide:
        return f"{value:.5g} [{low:.5g}, {high:.5g}]"
    return f"{value:.5g} ±{(high - low) / 2 / value:.1%}" if value > 0 else f"{value:.5g}"


def _shown_name(row, act_note: str) -> str:
    """The row's name; when the title already names the one activation format, the weights'."""
    suffix = f" A:{row.activations}"
    if act_note and row.name.startswith("W:") and row.name.endswith(suffix):
        return row.name[2:-len(suffix)]
    return row.name


def rank_table(rows, *, wide: bool = False):
    """The rank table: the columns one decides on (the catalog fits 120 columns, with an
    activation format too), or all of them."""
    first = rows[0] if rows else None
    pct = f"{first.level:.0%}" if first else "95%"
    acts = {r.activations for r in rows}
    act_note = f", activations {next(iter(acts))}" if len(acts) == 1 and None not in acts else ""
    table = TextTable(
        f"uscl rank: law {first.law}, N = {_si(first.params)}, D = {_si(first.tokens)} "
        f"({first.tokens / first.params:.3g}/param){act_note}; * Pareto frontier"
        if first else "uscl rank"
    )
    single = any(abs(r.rho_single_gmse - r.rho) > 1e-9 * max(r.rho, 1e-300) for r in rows)
    # Two-line headers where the values are narrower than the name (one line when wide).
    columns = [("", "left"), ("format", "left"), ("bits/\nparam", "right"),
               (f"GMSE [{pct}]" if wide else "GMSE", "right")]
    if wide:
        columns.append(("eff.\nbits", "right"))
    columns.append((f"rho [{pct}]", "right"))
    if single:
        columns.append(("rho\nsingle-GMSE", "right"))
    if wide:
        columns += [("N*rho", "right"), (f"loss [{pct}]", "right")]
    columns.append(("loss - bf16" if wide else "loss -\nbf16", "right"))
    if wide:
        columns.append(("N/rho", "right"))
    columns += [("memory\nto match", "right"), ("method", "left")]
    for name, just in columns:
        if wide:  # room enough for one-line headers
            name = name.replace("/\n", "/").replace("\n", " ")
        table.add_column(name, just)
    # What a narrow terminal leaves out first: what derives from, or sits beside, rho and memory.
    shown = {" ".join(name.split()): name for name, _ in table.columns}
    order = ["method", "N/rho", "eff. bits", "N*rho", "rho single-GMSE", f"GMSE [{pct}]", "GMSE", f"loss [{pct}]",
             "loss - bf16", "bits/ param", "bits/param"]
    table.optional = [shown[key] for key in order if key in shown]
    for r in rows:
        cells = [("*" if r.pareto else "") + ("!" if r.outside_domain else ""), _shown_name(r, act_note), f"{r.bits_per_param:.4g}",
                 _gmse(r.gmse, r.gmse_low, r.gmse_high, wide) if wide else f"{r.gmse:.5g}"]
        if wide:
            cells.append("inf" if r.effective_bits is None else f"{r.effective_bits:.3f}")
        cells.append(_span(r.rho, r.rho_low, r.rho_high))
        if single:
            differs = abs(r.rho_single_gmse - r.rho) > 1e-9 * max(r.rho, 1e-300)
            cells.append(f"{r.rho_single_gmse:.3g}" if differs else "")
        if wide:
            cells += [_si(r.effective_params), _span(r.predicted_loss, r.loss_low, r.loss_high, ".4g"),
                      _span(r.delta_loss_vs_bf16, r.delta_loss_low, r.delta_loss_high, ".3g", signed=True),
                      _si(r.params_to_match)]
        else:
            cells.append(_num(r.delta_loss_vs_bf16, "+.3g"))
        cells += [_bytes(r.memory_to_match_bytes), r.gmse_method]
        table.add_row(*cells, bold=r.pareto)
    return table


def prediction_tables(pred, law) -> list:
    """The prediction as printed (80 columns): each stage's GMSE and capacity, then the law's
    terms. With activations, stage names carry W: or A: (the tensor)."""
    pct = f"{pred.level:.0%}"
    stages = TextTable(
        f"uscl predict {pred.name} (law {law.name}, N = {_si(pred.params)}, "
        f"D = {_si(pred.tokens)})"
    )
    acts = any(s.tensor != "weights" for s in pred.stages)
    for name in ("stage", "GMSE", f"rho [{pct}]", "method"):
        stages.add_column(name, "left" if name in ("stage", "method") else "right")
    stages.optional = ["method"]
    for s in pred.stages:
        tensor = ("W: " if s.tensor == "weights" else "A: ") if acts else ""
        stages.add_row(
            tensor + s.name, _gmse(s.gmse, s.gmse_low, s.gmse_high, wide=False),
            _span(s.rho, s.rho_low, s.rho_high), s.gmse_method,
        )
    if not pred.stages:
        stages.add_row(pred.name, "0", "1 (lossless)", "")

    summary = TextTable(show_header=False, indent=2)
    summary.add_column("", "left")
    summary.add_column("", "right")
    summary.add_row("capacity rho", _span(pred.rho, pred.rho_low, pred.rho_high, ".4g"))
    if len(pred.stages) > 1:
        summary.add_row("  = product of the stages", " x ".join(f"{s.rho:.4g}" for s in pred.stages))
    if abs(pred.rho_single_gmse - pred.rho) > 1e-9 * max(pred.rho, 1e-300):
        summary.add_row("rho from the whole pipeline's GMSE", f"{pred.rho_single_gmse:.4g}")
    summary.add_row("bits per parameter", f"{pred.bits_per_param:.4g}")
    summary.add_row("effective parameters N*rho", _si(pred.effective_params))
    summary.add_row(
        f"A (N rho)^-alpha  (A={law.A.value:.4g}, alpha={law.alpha.value:.3g})", _num(pred.params_term)
    )
    summary.add_row(f"B D^-beta  (B={law.B.value:.4g}, beta={law.beta.value:.3g})", f"{pred.data_term:.4g}")
    summary.add_row("E", f"{pred.irreducible:.4g}")
    summary.add_row("predicted loss", _span(pred.predicted_loss, pred.loss_low, pred.loss_high, ".4g"))
    summary.add_row("dense bf16 loss (rho = 1)", f"{pred.dense_loss:.4g}")
    summary.add_row(
        "loss - bf16", _span(pred.delta_loss_vs_bf16, pred.delta_loss_low, pred.delta_loss_high, ".3g", signed=True)
    )
    summary.add_row("parameters to match bf16 (N/rho)", _si(pred.params_to_match))
    summary.add_row("memory to match bf16", _bytes(pred.memory_to_match_bytes))
    return [stages, summary]
