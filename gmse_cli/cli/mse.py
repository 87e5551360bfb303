"""`uscl mse`: real-weight MSE of formats on a safetensors checkpoint, beside their GMSE;
with ``--activations``, the same for the inputs of a model's linear layers run on a text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from gmse_cli.cli.options import CsvFlag, JsonFlag, examples, grouped, paragraphs

_EXAMPLES = examples(
    "uscl mse model.safetensors -f int4 -f nvfp4 --hadamard",
    "uscl mse ~/.cache/huggingface/hub/models--openai-community--gpt2 -f int4 --include 're:mlp'",
    "uscl mse ./my-model/ -f int8 --activations --data corpus.txt --tokens 8192 --json",
)

_EPILOG = """\
Layers: by default every linear weight matrix (floating point, at least 2-D, named *weight),
without embeddings, norms and the output head. --include PAT (repeatable) replaces that rule;
--exclude PAT always removes. PAT is a shell glob on the whole tensor name, or a regular
expression searched in it when written re:PAT.

Rows are the last axis (the input dimension of a PyTorch Linear stored as (out, in)), one per
output channel; GPT-2-style Conv1D weights, stored (in, out), are read transposed so that
holds for them too (found from config.json's model_type, or from their names and shapes). A
layer whose row length a format cannot split (group 128 on a row of 96) is skipped for that
format and reported, never padded.

Memory: layers stream from disk a chunk of rows (32 MB of float32) at a time; e4m3 or int8
scales over a per-tensor scale (nvfp4) take two passes over the chunks. Formats with another
per-tensor statistic (tensor-wide groups or sparsity) compress each layer whole: the largest
layer in float32, its compressed copy and the compressor's working arrays; with --sample,
only the sampled rows.

MSE = ||W - C(W)||^2 / ||W||^2 per layer; the overall value weights layers by parameters.
--sample FRAC measures that fraction of each layer's rows and reports a 95% interval.

Activations (--activations, needs the train extra): MODEL is a local Hugging Face model folder
or a uscl train model folder, loaded offline (safetensors only unless
--allow-pickle-code-execution; never remote code) and run in full precision on the first
--tokens tokens of --data (any corpus uscl train reads), in windows of --context tokens. The
input of every linear layer (module names; the same default exclusions and patterns as for
weights) is a stream of token rows; each row is compressed by each format and its error
normalised by its own norm: MSE = mean over rows of ||x - C(x)||^2 / ||x||^2. Also per layer:
the mean row kurtosis (3 for a Gaussian) and the largest max|x| / RMS, plain and after a
--hadamard-block (128) Hadamard rotation; layers whose input length is not a multiple of the
block show no rotated statistics, and a rotated format skips them (never padded). --weight-format
measures weight formats on the same layers and reports each weights x activations scheme's
capacity from the real MSEs beside the one from GMSE. Memory: the model plus one batch of one
layer's input; --sample measures a fraction of each layer's rows (half the rows with the
largest max|x| / RMS, half at random, seeded) with a 95% interval."""


_ACT = "Activations (--activations)"


@dataclass(frozen=True)
class ActivationOptions:
    """Options of ``uscl mse --activations``."""

    activations: Annotated[bool, typer.Option("--activations", help="measure the inputs of MODEL's linear layers on --data instead of its weights", rich_help_panel=_ACT)] = False
    data: Annotated[str | None, typer.Option("--data", help="text to run the model on: a text/JSONL/parquet file or folder, or c4", rich_help_panel=_ACT, show_default=False)] = None
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", help="tokenizer.json, folder or bpe:V (default: the model folder's)", rich_help_panel=_ACT, show_default=False)] = None
    tokens: Annotated[int, typer.Option("--tokens", help="tokens to run (the first of --data)", rich_help_panel=_ACT)] = 4096
    context: Annotated[int, typer.Option("--context", help="tokens per window (at most the model's max positions)", rich_help_panel=_ACT)] = 512
    batch_size: Annotated[int, typer.Option("--batch-size", help="windows per forward pass", rich_help_panel=_ACT)] = 4
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N", rich_help_panel=_ACT)] = "auto"
    dtype: Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16: the precision the model runs in", rich_help_panel=_ACT)] = "float32"
    weight_formats: Annotated[list[str] | None, typer.Option("--weight-format", help="weight format paired with every activation format (repeatable; default: a uscl model's own)", rich_help_panel=_ACT, show_default=False)] = None
    compressed_forward: Annotated[bool, typer.Option("--compressed-forward", help="run a uscl train model with its own weight and activation formats", rich_help_panel=_ACT)] = False
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle-code-execution", help="load pickled .bin weights: unpickling can run code from the file", rich_help_panel=_ACT)] = False
    text_field: Annotated[str, typer.Option("--text-field", help="JSONL/parquet text column", rich_help_panel=_ACT)] = "text"
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="the training run's data.val_fraction (to rebuild a bpe:V tokenizer)", rich_help_panel=_ACT)] = 0.02

    def check(self) -> None:
        """Activation options only with --activations, and --data with it."""
        from gmse_cli.errors import SpecError

        if self.activations and self.data is None:
            raise SpecError("--activations needs --data TEXT: the text the model runs on")
        given = [name for name, on in (("--data", self.data is not None), ("--tokenizer", self.tokenizer is not None),
                                       ("--weight-format", bool(self.weight_formats)),
                                       ("--compressed-forward", self.compressed_forward),
                                       ("--allow-pickle-code-execution", self.allow_pickle)) if on]
        if given and not self.activations:
            raise SpecError(f"{given[0]} applies to activations: add --activations")


def register(app: typer.Typer) -> None:
    @app.command("mse", epilog=_EXAMPLES + "\n\n" + paragraphs(_EPILOG))
    @grouped
    def mse_command(
        checkpoint: Annotated[Path, typer.Argument(metavar="MODEL", help="a .safetensors file, a sharded model's .index.json, a folder of shards, a Hugging Face (or uscl train) model folder or hub-cache folder (models--org--name)")],
        formats: Annotated[list[str] | None, typer.Option("--format", "-f", help="format to measure (repeatable): catalog name, .toml or shorthand", show_default=False)] = None,
        hadamard: Annotated[bool, typer.Option("--hadamard", help="also measure each format after a Hadamard rotation of --hadamard-block")] = False,
        hadamard_block: Annotated[int, typer.Option("--hadamard-block", help="block of --hadamard's rotation and of the rotated activation statistics (a power of two)")] = 128,
        include: Annotated[list[str] | None, typer.Option("--include", help="layers to measure (glob or re:REGEX; repeatable)", show_default="every linear weight matrix but embeddings, norms and the output head")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", help="layers to leave out (glob or re:REGEX; repeatable)")] = None,
        sample: Annotated[float | None, typer.Option("--sample", help="fraction of rows per layer to measure (faster, with an interval)", show_default="none: every row")] = None,
        seed: Annotated[int, typer.Option(help="seed for --sample and the GMSE sample bank")] = 0,
        law: Annotated[str | None, typer.Option("--law", help="law file or shipped law name for capacities (default: the shipped law)")] = None,
        rel_err: Annotated[float, typer.Option(help="target relative standard error of the GMSE estimates")] = 1e-3,
        worst: Annotated[int, typer.Option(help="layers listed in the worst-layers table per format")] = 5,
        plot: Annotated[Path | None, typer.Option("--plot", help="write each layer's MSE / GMSE (.png, .svg or .pdf)")] = None,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
        act: ActivationOptions = ActivationOptions(),
    ) -> None:
        """Real-weight MSE of each FORMAT on MODEL: per layer and overall, its ratio to GMSE,
        effective bits, and the capacity the law predicts from each; with --activations, the
        same on the inputs of MODEL's linear layers run on a text."""
        from gmse_cli.cli.console import drawing, quiet_foreign_loggers, wrote
        from gmse_cli.cli.options import one_output
        from gmse_cli.cli.output import print_json
        from gmse_cli.errors import SpecError
        from gmse_cli.figures import check_plot_path
        from gmse_cli.inputs import existing_files
        from gmse_cli.messages import note
        from gmse_cli.realmse import checkpoint_name, measure_mse, plot_mse

        quiet_foreign_loggers()  # --activations loads transformers
        one_output(json_out, csv_out)
        if worst < 0:
            raise SpecError(f"--worst {worst} must be 0 or more")
        act.check()
        if plot is not None:  # never over the checkpoint, law or text it reads (a .png name is just a name)
            plot = check_plot_path(plot, inputs=existing_files(checkpoint, law, act.data, act.tokenizer))
        if act.activations:
            _activations(checkpoint, formats or [], act, hadamard=hadamard, hadamard_block=hadamard_block,
                         include=include or (), exclude=exclude or (), sample=sample, seed=seed, law=law, rel_err=rel_err,
                         worst=worst, plot=plot, json_out=json_out, csv_out=csv_out)
            return

        results = measure_mse(
            checkpoint, formats or [], hadamard=hadamard, hadamard_block=hadamard_block,
            include=include or (), exclude=exclude or (), sample=sample, seed=seed, law=law if law is not None else "default", rel_err=rel_err,
            progress=True, warn=note,
        )
        if plot is not None:
            with drawing(plot):
                plot_mse(results, plot, checkpoint=checkpoint_name(checkpoint))
            wrote("plot", plot)
        if json_out:
            print_json([r.model_dump(mode="json") for r in results])
            return
        if csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv([r.model_dump(mode="json") for r in results])
            return
        _render(results, worst, law_shown=law if law is not None else "default")


def _fmt_rho(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _fmt_bits(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3f}"


def _render(results, worst: int, *, law_shown: str) -> None:
    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table
    from gmse_cli.cli.texttable import print_capacity_flags, print_unrecorded_gmse

    sampled = any(r.sample < 1 for r in results)
    first = results[0]
    # Formats may measure different layers (one that cannot split a row skips it): count every
    # layer some format measured; each format's skips are listed under the tables.
    measured = {layer.name: layer.params for r in results for layer in r.layers}
    title = f"Real-weight MSE on {len(measured)} layers, {sum(measured.values()):,} parameters"
    if sampled:
        title += f" (sampled {first.sample:.1%} of rows, 95% intervals)"
    table = Table(title=title, title_justify="left")
    columns = ["format", "bits/param", "MSE", "GMSE", "MSE/GMSE", "eff. bits", "GMSE eff. bits", "rho (MSE)", "rho (GMSE)"]
    if sampled:
        columns.insert(3, "95% CI")
    for col in columns:
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in results:
        row = [r.format, f"{r.bits_per_param:.4g}", f"{r.mse:.5g}", f"{r.gmse:.5g}", f"{r.ratio:.3f}",
               _fmt_bits(r.effective_bits), _fmt_bits(r.gmse_effective_bits), _fmt_rho(r.rho), _fmt_rho(r.rho_gmse)]
        if sampled:
            row.insert(3, f"[{r.ci_low:.4g}, {r.ci_high:.4g}]")
        table.add_row(*row)
    print_table(table, optional=["GMSE eff. bits", "eff. bits", "bits/param", "rho (GMSE)", "GMSE", "95% CI"])
    print_capacity_flags((r.format, r.beyond_fitted_gmse) for r in results)
    if first.fitted_gmse_recorded is False:
        print_unrecorded_gmse(law_shown)
    if worst == 0:
        return
    table = Table(title=f"Worst {worst} layers per format (by MSE/GMSE)", title_justify="left")
    for col in ("format", "layer", "shape", "MSE", "MSE/GMSE"):
        table.add_column(col, justify="left" if col in ("format", "layer") else "right")
    for r in results:
        ranked = sorted(r.layers, key=lambda layer: layer.mse / layer.gmse if layer.gmse > 0 else 0, reverse=True)
        for i, layer in enumerate(ranked[:worst]):
            ratio = layer.mse / layer.gmse if layer.gmse > 0 else float("inf")
            table.add_row(r.format if i == 0 else "", layer.name, "x".join(map(str, layer.shape)),
                          f"{layer.mse:.5g}", f"{ratio:.3f}")
    print_table(table)
    for r in results:
        if r.skipped:
            out_console.print(f"{r.format}: {len(r.skipped)} layer(s) skipped ({r.skipped[0].reason})", markup=False)


def _activations(model: Path, formats: list[str], act: ActivationOptions, *, worst: int, plot: Path | None,
                 json_out: bool, csv_out: bool, law: str | None, **options) -> None:
    from gmse_cli.cli.console import drawing, wrote
    from gmse_cli.cli.output import print_json
    from gmse_cli.law import load_law
    from gmse_cli.messages import note
    from gmse_cli.realmse import checkpoint_name, plot_mse
    from gmse_cli.realmse.activations import measure_activations
    from gmse_cli.spec import resolve_format

    # Every named format and the law resolve before the model and the text are loaded.
    for name in [*formats, *(act.weight_formats or [])]:
        resolve_format(name)
    if law is not None:
        load_law(law)
    report = measure_activations(
        model, act.data, formats, weight_formats=act.weight_formats, tokenizer=act.tokenizer, tokens=act.tokens,
        context=act.context, batch_size=act.batch_size, device=act.device, dtype=act.dtype,
        allow_pickle=act.allow_pickle, compressed_forward=act.compressed_forward, text_field=act.text_field,
        val_fraction=act.val_fraction, law=law if law is not None else "default", progress=True,
        warn=note, **options,
    )
    if plot is not None:
        with drawing(plot):
            plot_mse(report.formats, plot, checkpoint=checkpoint_name(model), tensors="activation")
        wrote("plot", plot)
    if json_out or csv_out:
        dump = report.model_dump(mode="json")
        formats_dump = dump.pop("formats")  # the results; the rest describes the run and the layers
        if json_out:
            print_json(formats_dump, **dump)
        else:
            from gmse_cli.cli.output import print_csv

            print_csv(formats_dump)
        return
    _render_activations(report, worst, law_shown=law if law is not None else "default")


def _render_activations(report, worst: int, *, law_shown: str) -> None:
    from gmse_cli.cli.console import out_console, print_table
    from gmse_cli.cli.table import Table
    from gmse_cli.cli.texttable import print_capacity_flags, print_unrecorded_gmse

    # the fraction measured, not the one asked for: a layer never measures fewer than a few rows
    measured = report.formats[0].sample if report.sample is not None and report.formats else 1.0
    sampled = measured < 1
    title = (f"Real-activation MSE on {len(report.layers)} layers, {report.windows} x {report.context} tokens "
             f"({report.forward} forward)" + (f", {measured:.1%} of rows sampled, 95% intervals" if sampled else ""))
    table = Table(title=title, title_justify="left")
    columns = ["format", "bits/elem", "MSE", "GMSE", "MSE/GMSE", "rho (MSE)", "rho (GMSE)"]
    if sampled:
        columns.insert(3, "95% CI")
    for col in columns:
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in report.formats:
        row = [r.format, f"{r.bits_per_param:.4g}", f"{r.mse:.5g}", f"{r.gmse:.5g}", f"{r.ratio:.3f}",
               _fmt_rho(r.rho), _fmt_rho(r.rho_gmse)]
        if sampled:
            row.insert(3, f"[{r.ci_low:.4g}, {r.ci_high:.4g}]")
        table.add_row(*row)
    print_table(table, optional=["bits/elem", "rho (GMSE)", "GMSE", "95% CI"])
    print_capacity_flags((r.format, r.beyond_fitted_gmse) for r in report.formats)
    if report.formats and report.formats[0].fitted_gmse_recorded is False:
        print_unrecorded_gmse(law_shown)
    out_console.print(
        f"kurtosis (mean over rows, Gaussian 3): {_fmt_stat(report.kurtosis)}, after Hadamard "
        f"{_fmt_stat(report.kurtosis_rotated)}; largest |x|/RMS: {_fmt_stat(report.max_crest)}, after Hadamard "
        f"{_fmt_stat(report.max_crest_rotated)}"
    )
    if worst > 0:
        first = report.formats[0]
        ratio = {layer.name: layer.mse / layer.gmse if layer.gmse > 0 else 0.0 for layer in first.layers}
        ranked = sorted(report.layers, key=lambda s: ratio.get(s.name, 0.0), reverse=True)[:worst]
        table = Table(title=f"Worst {len(ranked)} layers by {first.format} MSE/GMSE", title_justify="left")
        cols = ["layer", "in", "kurtosis", "kurt. (had)", "max|x|/RMS", "(had)",
                *(f"{r.format} MSE/GMSE" for r in report.formats)]
        for col in cols:
            table.add_column(col, justify="left" if col == "layer" else "right")
        per = [{layer.name: layer.mse / layer.gmse for layer in r.layers if layer.gmse > 0} for r in report.formats]
        for s in ranked:
            table.add_row(s.name, str(s.row_length), _fmt_stat(s.kurtosis), _fmt_stat(s.kurtosis_rotated),
                          _fmt_stat(s.max_crest), _fmt_stat(s.max_crest_rotated),
                          *(f"{p[s.name]:.3f}" if s.name in p else "skipped" for p in per))
        print_table(table)
    if report.schemes:
        table = Table(title="Weights x activations: factorized capacity", title_justify="left")
        for col in ("weights", "activations", "W MSE/GMSE", "A MSE/GMSE", "rho (real MSE)", "rho (GMSE)"):
            table.add_column(col, justify="left" if col in ("weights", "activations") else "right")
        for sc in report.schemes:
            table.add_row(sc.weights, sc.activations, f"{sc.weight_mse / sc.weight_gmse:.3f}",
                          f"{sc.activation_mse / sc.activation_gmse:.3f}", _fmt_rho(sc.rho), _fmt_rho(sc.rho_gmse))
        print_table(table)
    for r in report.formats:
        if r.skipped:
            out_console.print(f"{r.format}: {len(r.skipped)} layer(s) skipped ({r.skipped[0].reason})", markup=False)


def _fmt_stat(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"

