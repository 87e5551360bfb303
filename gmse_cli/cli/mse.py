"""`uscl mse`: real-weight MSE of formats on a safetensors checkpoint, beside their GMSE."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gmse_cli.cli.options import CsvFlag, JsonFlag, examples

_EXAMPLES = examples(
    "uscl mse model.safetensors -f int4 -f nvfp4 --hadamard",
    "uscl mse ~/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2 -f int4 --include 're:intermediate|output'",
    "uscl mse model.safetensors.index.json -f mxfp4 --sample 0.1 --json",
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
--sample FRAC measures that fraction of each layer's rows and reports a 95% interval."""


def _paragraphs(text: str) -> str:
    # Rich help keeps single newlines as breaks; rewrap each paragraph as one line.
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))


def register(app: typer.Typer) -> None:
    @app.command("mse", epilog=_EXAMPLES + "\n\n" + _paragraphs(_EPILOG))
    def mse_command(
        checkpoint: Annotated[Path, typer.Argument(help="a .safetensors file, a sharded model's .index.json, a folder of shards, a Hugging Face model folder or hub-cache folder (models--org--name)")],
        formats: Annotated[list[str], typer.Option("--format", "-f", help="format to measure (repeatable): catalog name, .toml or shorthand")],
        hadamard: Annotated[bool, typer.Option("--hadamard", help="also measure each format after a 128-block Hadamard rotation")] = False,
        include: Annotated[list[str] | None, typer.Option("--include", help="layers to measure (glob or re:REGEX; repeatable)")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", help="layers to leave out (glob or re:REGEX; repeatable)")] = None,
        sample: Annotated[float | None, typer.Option("--sample", help="fraction of rows per layer to measure (faster, with an interval)")] = None,
        seed: Annotated[int, typer.Option(help="seed for --sample and the GMSE sample bank")] = 0,
        law: Annotated[str | None, typer.Option("--law", help="law file or shipped law name for capacities (default: the shipped law)")] = None,
        rel_err: Annotated[float, typer.Option(help="target relative standard error of the GMSE estimates")] = 1e-3,
        worst: Annotated[int, typer.Option(help="layers listed in the worst-layers table per format")] = 5,
        plot: Annotated[Path | None, typer.Option("--plot", help="write each layer's MSE / GMSE (.png, .svg or .pdf)")] = None,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """Real-weight MSE of each FORMAT on CHECKPOINT: per layer and overall, its ratio to
        GMSE, effective bits, and the capacity the law predicts from each."""
        from gmse_cli.cli.console import err_console, print_json
        from gmse_cli.cli.options import one_output
        from gmse_cli.errors import SpecError
        from gmse_cli.figures import check_plot_path
        from gmse_cli.progress import note
        from gmse_cli.realmse import checkpoint_name, measure_mse, plot_mse

        one_output(json_out, csv_out)
        if worst < 0:
            raise SpecError(f"--worst {worst} must be 0 or more")
        if plot is not None:
            check_plot_path(plot)

        results = measure_mse(
            checkpoint, formats, hadamard=hadamard, include=include or (), exclude=exclude or (),
            sample=sample, seed=seed, law=law if law is not None else "default", rel_err=rel_err,
            progress=True, warn=note,
        )
        if plot is not None:
            plot_mse(results, plot, checkpoint=checkpoint_name(checkpoint))
            err_console.print(f"wrote {plot}")
        if json_out:
            print_json([r.model_dump(mode="json") for r in results])
            return
        if csv_out:
            from gmse_cli.cli.output import print_csv

            print_csv([r.model_dump(mode="json") for r in results])
            return
        _render(results, worst)


def _fmt_rho(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _fmt_bits(value: float | None) -> str:
    return "inf" if value is None else f"{value:.3f}"


def _render(results, worst: int) -> None:
    from rich.table import Table

    from gmse_cli.cli.console import out_console

    sampled = any(r.sample < 1 for r in results)
    first = results[0]
    title = f"Real-weight MSE on {len(first.layers)} layers, {first.params:,} parameters"
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
    out_console.print(table)
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
    out_console.print(table)
    for r in results:
        if r.skipped:
            out_console.print(f"{r.format}: {len(r.skipped)} layer(s) skipped ({r.skipped[0].reason})")

