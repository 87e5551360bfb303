"""`uscl train` (QAT pretraining sweeps) and `uscl tokenizer train` (a local byte-level BPE)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gmse_cli.cli.options import ActFormat, CsvFlag, JsonFlag, examples
from gmse_cli.cli.train_output import (
    flops_per_second,
    plan_device,
    records_for,
    render_plans,
    render_records,
)
from gmse_cli.inputs import user_path

# RunConfig's defaults, spelled here so that `uscl train --help` needs no pydantic import; a test
# checks them against RunConfig and DataConfig.
DEFAULT_TOKENIZER = "meta-llama/Llama-2-7b-hf"
DEFAULT_EVAL_TOKENS = 1 << 20
DEFAULT_CHECKPOINT_EVERY = 1000

_TRAIN_EPILOG = examples(
    "uscl train train/cpu-quick.toml --dry-run",
    "uscl train train/cpu-quick.toml --out runs.jsonl",
    "uscl train --preset tiny --format int4 --act int4 --tokens-per-param 20 --data corpus.txt.xz "
    "--tokenizer bpe:4096 --out runs.jsonl",
    "uscl train train/paper-c4.toml --dry-run --device cuda",
    "uscl train train/paper-c4.toml --launcher torchrun --nproc-per-node 8 --out runs/paper-c4.jsonl",
    "uscl train train/paper-c4.toml --launcher slurm --out runs/paper-c4.jsonl",
    notes="Flags given with a SWEEP file replace the spec's values for every run. A re-run skips the runs "
    "already in --out and resumes an interrupted one from its last checkpoint; Ctrl-C writes a "
    "checkpoint and stops. --dry-run estimates each run's time from finished runs in --out, else from "
    "training steps timed here, else from FLOPs.",
)


def register(app: typer.Typer) -> None:
    @app.command("train", epilog=_TRAIN_EPILOG)
    def train_command(
        sweep: Annotated[Path | None, typer.Argument(help="sweep spec (TOML); omit to run one configuration from flags", metavar="SWEEP", show_default=False)] = None,
        out: Annotated[Path, typer.Option(help="results file: one JSON line appended per finished run")] = Path("runs.jsonl"),
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the planned runs and exit")] = False,
        preset: Annotated[str | None, typer.Option(help="model size: 30m 50m 100m 200m 430m 800m tiny-50k tiny-100k tiny-200k tiny tiny-1m tiny-3m", show_default="the spec's; without SWEEP, required")] = None,
        weights: Annotated[str | None, typer.Option("--format", "-f", help="weight format (catalog name, .toml or shorthand)", show_default="fp32")] = None,
        acts: ActFormat = None,
        old_weights: Annotated[str | None, typer.Option("--weights", hidden=True)] = None,
        old_acts: Annotated[str | None, typer.Option("--acts", hidden=True)] = None,
        tokens_per_param: Annotated[float | None, typer.Option(help="token budget D = this x N (default 100)")] = None,
        max_steps: Annotated[int | None, typer.Option(help="stop after this many steps (shrinks the budget)", show_default="none: the whole budget")] = None,
        data: Annotated[str | None, typer.Option(help="'c4' (default, streamed) or a local text/JSONL/parquet file or folder")] = None,
        tokenizer: Annotated[str | None, typer.Option(help="hub id, tokenizer.json, or bpe:V (trained on --data and cached)", show_default=DEFAULT_TOKENIZER)] = None,
        val_fraction: Annotated[float | None, typer.Option(help="local data: the tail share held out for validation, in (0, 0.5) (default 0.02)")] = None,
        seed: Annotated[int | None, typer.Option(help="seed (model init and batch order)", show_default="0")] = None,
        batch_size: Annotated[int | None, typer.Option(help="sequences per step over all processes (default: the preset's)")] = None,
        micro_batch_size: Annotated[int | None, typer.Option(help="sequences per forward pass per process (gradient accumulation)", show_default="the whole per-process batch")] = None,
        context: Annotated[int | None, typer.Option(help="sequence length (default: the preset's)")] = None,
        lr: Annotated[float | None, typer.Option(help="peak learning rate (default: the preset's)")] = None,
        rbbm_p: Annotated[float | None, typer.Option(help="RBBM backward masking for sparse formats, p in (0, 0.5)", show_default="none: plain straight-through")] = None,
        eval_tokens: Annotated[int | None, typer.Option(help="held-out tokens for the final loss", show_default=str(DEFAULT_EVAL_TOKENS))] = None,
        eval_every: Annotated[int | None, typer.Option(help="steps between held-out evaluations (0 = end only)", show_default="0")] = None,
        checkpoint_every: Annotated[int | None, typer.Option(help="steps between checkpoints (0 = none)", show_default=str(DEFAULT_CHECKPOINT_EVERY))] = None,
        checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint folder (default: OUT with .ckpt)")] = None,
        models_dir: Annotated[Path | None, typer.Option(help="where each finished run's final model is kept (default: the spec's models_dir, else OUT with .models)")] = None,
        no_keep_models: Annotated[bool, typer.Option("--no-keep-models", help="do not keep finished runs' final models")] = False,
        shard: Annotated[str | None, typer.Option(help="K/N: run only every N-th run of the sweep, starting at the K-th (N processes share one results file)")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
        threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice; 1 is best on a busy machine)")] = None,
        launcher: Annotated[str, typer.Option(help="local (in process), torchrun (all GPUs of this node), slurm (submitit)")] = "local",
        nproc_per_node: Annotated[int, typer.Option(help="processes for --launcher torchrun")] = 1,
        compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model: on a GPU it fuses the quantizers (int4 W+A costs 1.16x fp32 compiled, 3.2x eager on an H100) after minutes of compiling; for long runs")] = False,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
        json_out: JsonFlag = False,
        csv_out: CsvFlag = False,
    ) -> None:
        """Pretrain Llama models over compressed weights/activations and record the final losses.

        Runs come from a SWEEP spec (sizes x tokens per parameter x weight formats x activation formats x seeds) or from the flags; each finished run appends one JSON line to --out.
        """
        from gmse_cli.atomic import check_output_path
        from gmse_cli.cli.console import quiet_foreign_loggers
        from gmse_cli.cli.options import one_output, renamed
        from gmse_cli.errors import TrainError, one_of
        from gmse_cli.limits import MAX_THREADS
        from gmse_cli.training.results import check_appendable, finished_keys
        from gmse_cli.training.sweep import expand_sweep, plan_sweep, plan_vocab

        quiet_foreign_loggers()

        one_output(json_out, csv_out)
        weights = renamed("--weights", "--format", old_weights, weights)
        acts = renamed("--acts", "--act", old_acts, acts)

        if threads is not None:
            if not 1 <= threads <= MAX_THREADS:
                raise TrainError(f"--threads {threads} must be from 1 to {MAX_THREADS}")
            import numpy  # noqa: F401  (before torch: see gmse_cli.training)
            import torch

            torch.set_num_threads(threads)
        launcher = one_of(launcher, ("local", "torchrun", "slurm"), "--launcher", TrainError)
        spec = _build_spec(sweep, preset=preset, weights=weights, acts=acts, tokens_per_param=tokens_per_param,
                           seed=seed, data=data, tokenizer=tokenizer, val_fraction=val_fraction, lr=lr,
                           rbbm_p=rbbm_p)
        overrides = {k: v for k, v in {
            "max_steps": max_steps, "batch_size": batch_size, "micro_batch_size": micro_batch_size,
            "context": context, "eval_tokens": eval_tokens, "eval_every": eval_every,
            "checkpoint_every": checkpoint_every,
        }.items() if v is not None}
        runs = expand_sweep(spec, overrides=overrides)
        if shard is not None:
            runs = _shard(runs, shard)
        from gmse_cli.training.config import check_format_fits, check_local_inputs
        from gmse_cli.training.plan import split_batch
        from gmse_cli.training.sweep import check_slurm_device, processes_per_run

        if launcher == "slurm":
            check_slurm_device(device, spec.slurm)  # a dry run says it too
        processes = processes_per_run(launcher, nproc_per_node, spec.slurm)
        for cfg in runs:
            check_format_fits(cfg)
            check_local_inputs(cfg)
            # else every worker (or queued Slurm job) fails with it, after tokenizing, in a traceback
            split_batch(cfg, processes)
        # Every output is checked before anything trains: a run is never lost to an unwritable --out.
        out = check_output_path(out, what="results file", error=TrainError, parents=True)
        check_appendable(out)  # its lock file too (another user's, read-only, opens for the lock)
        finished = finished_keys(out)  # also rejects a results file that is not JSON lines
        ckpt_root = user_path(checkpoint_dir) if checkpoint_dir else out.with_name(out.name + ".ckpt")
        models_root = None
        if not no_keep_models:
            chosen = models_dir or spec.models_dir
            models_root = user_path(chosen) if chosen else out.with_name(out.name + ".models")
        # Checked in a dry run too. One folder for both would delete each kept model with its run's checkpoints.
        for folder, what, others in ((ckpt_root, "checkpoint folder", [out]),
                                     (models_root, "models folder", [out, ckpt_root])):
            if folder is not None:
                check_output_path(folder, what=what, error=TrainError, folder=True, inputs=others)
        for source in sorted({cfg.data.source for cfg in runs}):
            _outside_the_corpus(source, [(out, "results file"), (ckpt_root, "checkpoint folder"),
                                         (models_root, "models folder")])
        if dry_run:
            from gmse_cli.training.results import load_records
            from gmse_cli.training.throughput import estimate_plans

            flops, source = flops_per_second(device, nproc_per_node if launcher == "torchrun" else 1)
            vocab = plan_vocab(spec.data.tokenizer)
            plans = plan_sweep(runs, vocab_size=vocab, flops_per_second=flops, finished=finished)
            here = plan_device(device)
            if flops is not None and launcher == "local" and here is not None:
                plans, how = estimate_plans(
                    plans, runs, vocab_size=vocab, device=here, flops_per_second=flops,
                    records=load_records(out) if out.exists() else (), progress=not no_progress,
                )
                if how != "FLOPs at the timed matmul rate":
                    source = how + (f"; FLOPs at {flops:.3g} FLOP/s ({source}) for the rest" if "FLOPs" in how else "")
                    flops = None
            render_plans(spec.name, plans, output=_output(json_out, csv_out), flops=flops, source=source)
            if launcher == "slurm":
                _slurm_plan(spec, sum(not p.done for p in plans))
            return
        plan_sweep(runs)  # every budget must be at least one step before anything trains
        _run(spec, runs, out=out, ckpt_root=ckpt_root, models_root=models_root, device=device, launcher=launcher,
             nproc_per_node=nproc_per_node, compile_model=compile_model, progress=not no_progress,
             output=_output(json_out, csv_out), argv=_worker_argv(locals()), threads=threads)

    tokenizer_app = typer.Typer(help="Tokenizers for offline training.", no_args_is_help=True)

    @tokenizer_app.command("train", epilog=examples(
        "uscl tokenizer train ../shared/data/python-docs-3.11.txt.xz --vocab-size 2048 --out tokenizer.json",
        "uscl tokenizer train corpus/ --text-field content --out tok.json --json",
    ))
    def tokenizer_train_command(
        text: Annotated[Path, typer.Argument(help="text file or folder (.txt, .xz, .gz, JSON lines, parquet)", metavar="TEXT")],
        vocab_size: Annotated[int, typer.Option(help="vocabulary size, including 256 byte tokens and <|endoftext|>")] = 8192,
        out: Annotated[Path, typer.Option(help="where to write tokenizer.json")] = Path("tokenizer.json"),
        text_field: Annotated[str, typer.Option(help="JSON lines / parquet text field")] = "text",
        val_fraction: Annotated[float, typer.Option(help="leave out the tail share that `uscl train --val-fraction` "
                                                    "holds out for validation (the same cut), in (0, 0.5)")] = 0.02,
        json_out: JsonFlag = False,
    ) -> None:
        """Train a byte-level BPE (GPT-2 style) on local TEXT with the `tokenizers` library, on the
        text a training run on TEXT trains on: its validation tail never shapes the vocabulary."""
        import hashlib
        import os
        import sys

        from gmse_cli.atomic import check_output_path, write_text_atomic
        from gmse_cli.cli.console import err_console
        from gmse_cli.cli.output import print_json
        from gmse_cli.errors import DataError, TrainError
        from gmse_cli.training.data import corpus_files, require_tokenizers, split_corpus, train_bpe

        text = user_path(text)  # a quoted '~/corpus': read from the home folder, so checked there too
        out = check_output_path(out, what="tokenizer", error=TrainError, parents=True, inputs=[text])
        # realpath, not Path.resolve: an --out through a symlink loop is a name, not a RuntimeError
        if text.is_dir() and Path(os.path.realpath(out)).is_relative_to(os.path.realpath(text)):
            # it would join the corpus: the next training on the folder reads it as text
            raise TrainError(f"cannot write tokenizer '{out}' inside the corpus folder '{text}' (choose another path)")
        corpus_files(text)  # a missing or empty source is one line, before the progress line
        require_tokenizers()  # so is a core install's missing extra
        err_console.print(f"training a byte-level BPE of {vocab_size:,} tokens on {text} "
                          f"(all but its last {val_fraction:.3g} of the text, held out for validation) ...",
                          markup=False)
        train_part, _, _ = split_corpus(str(text), text_field=text_field, val_fraction=val_fraction)
        blank = True

        def texts():
            nonlocal blank
            for piece, _ in train_part():
                blank = blank and not piece.strip()
                yield piece

        tok = train_bpe(texts(), vocab_size=vocab_size)
        if blank:  # else a tokenizer of the 256 bytes (and whitespace), whatever --vocab-size asked
            raise DataError(f"data source '{text}' holds no text")
        if tok.get_vocab_size() < vocab_size:
            err_console.print(f"note: {text} gives {tok.get_vocab_size():,} tokens, not {vocab_size:,}: "
                              "no other pair of tokens occurs twice", markup=False)
        blob = tok.to_str()
        try:  # atomically: a full disk never leaves a truncated tokenizer.json
            out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out, blob)
        except OSError as exc:
            raise TrainError(f"cannot write tokenizer {out}: {exc.strerror or exc}") from None
        info = {"path": str(out), "vocab_size": tok.get_vocab_size(), "sha256": hashlib.sha256(blob.encode()).hexdigest()}
        if json_out:
            print_json(info)
        else:
            # written plainly, not through rich: the path as it is (brackets are text, not markup:
            # 'tok[bold].json'), tabs kept, one line however long (rich expanded the tabs to spaces,
            # read the brackets as markup and broke a long path at the piped page's 160 columns)
            sys.stdout.write(f"{out}\tvocab {info['vocab_size']}\tsha256 {info['sha256'][:16]}\n")

    app.add_typer(tokenizer_app, name="tokenizer")


# --------------------------------------------------------------------------------------------
# Helpers (no math: building specs from flags, launching, rendering)
# --------------------------------------------------------------------------------------------


def _build_spec(sweep: Path | None, **flags: Any):
    """A sweep spec from the file (or defaults for a single run) with the flags applied."""
    from pydantic import ValidationError

    from gmse_cli.errors import TrainError
    from gmse_cli.training.config import config_error
    from gmse_cli.training.sweep import SweepSpec, load_sweep

    if sweep is not None:
        base = load_sweep(sweep).model_dump()
    else:
        if flags["preset"] is None:
            raise TrainError("give a SWEEP spec file, or --preset (e.g. --preset tiny) to run one configuration")
        base = {"name": "single", "presets": [flags["preset"]], "tokens_per_param": [100.0]}
    single = {
        "preset": ("presets", lambda v: [v]),
        "weights": ("weights", lambda v: [v]),
        "acts": ("activations", lambda v: [v]),
        "tokens_per_param": ("tokens_per_param", lambda v: [v]),
        "seed": ("seeds", lambda v: [v]),
    }
    for flag, (key, wrap) in single.items():
        if flags[flag] is not None:
            base[key] = wrap(flags[flag])
            if flag in ("weights", "acts"):
                base["schemes"] = []
    for flag, section, key in (("data", "data", "source"), ("tokenizer", "data", "tokenizer"),
                               ("val_fraction", "data", "val_fraction"),
                               ("lr", "optim", "lr"), ("rbbm_p", "estimator", "rbbm_p")):
        if flags[flag] is not None:
            base.setdefault(section, {})[key] = flags[flag]
    try:
        return SweepSpec.model_validate(base)
    except ValidationError as exc:
        raise config_error(exc, source=str(sweep) if sweep else "uscl train") from None


def _outside_the_corpus(source: str, outputs: list[tuple[Path | None, str]]) -> None:
    """Refuse an output inside a local corpus folder: every file under it (hidden ones aside) is
    read as text, so the next run of the sweep would train on (or fail on) the results file,
    checkpoints and kept models of the last."""
    import os

    from gmse_cli.errors import TrainError
    from gmse_cli.training.config import C4_SOURCE

    if source.lower() == C4_SOURCE or not user_path(source).is_dir():
        return
    corpus = Path(os.path.realpath(user_path(source)))
    for path, what in outputs:
        if path is None:
            continue
        where = Path(os.path.realpath(path))
        if where.is_relative_to(corpus) and not any(p.startswith(".") for p in where.relative_to(corpus).parts):
            raise TrainError(f"cannot write {what} '{path}' inside the corpus folder '{source}': the next run "
                             "would read it as text (choose another path)")


def _slurm_plan(spec, jobs: int) -> None:
    """What `--launcher slurm` would submit, on stderr (stdout holds the plan's table or JSON)."""
    from gmse_cli.messages import info
    from gmse_cli.training.submitit_jobs import sbatch_options

    slurm = spec.slurm
    if slurm.cluster == "slurm":
        info(f"sbatch, {jobs} job(s): {sbatch_options(slurm, spec.name, jobs)}; logs in {slurm.folder}")
    else:
        info(f"submitit's {slurm.cluster} executor, {jobs} job(s) on this machine, at most {slurm.max_parallel} "
             f"at once; logs in {slurm.folder}")


def _shard(runs: list, shard: str) -> list:
    """Runs K, K+N, K+2N, ... (1-based) of the sweep for ``--shard K/N``."""
    from gmse_cli.cli.validators import parse_shard
    from gmse_cli.errors import TrainError

    if (parsed := parse_shard(shard)) is None:
        raise TrainError(f"--shard '{shard}' must be K/N with 1 <= K <= N (e.g. 1/2)")
    k, n = parsed
    return runs[k - 1 :: n]


def _worker_argv(params: dict[str, Any]) -> list[str]:
    """The same command for torchrun workers (launcher local, no dry run)."""
    args = ["train"]
    if params["sweep"] is not None:
        args.append(str(params["sweep"]))
    names = {
        "out": "--out", "preset": "--preset", "weights": "--format", "acts": "--act",
        "tokens_per_param": "--tokens-per-param", "max_steps": "--max-steps", "data": "--data",
        "tokenizer": "--tokenizer", "val_fraction": "--val-fraction", "seed": "--seed", "batch_size": "--batch-size",
        "micro_batch_size": "--micro-batch-size", "context": "--context", "lr": "--lr",
        "rbbm_p": "--rbbm-p", "eval_tokens": "--eval-tokens", "eval_every": "--eval-every",
        "checkpoint_every": "--checkpoint-every", "checkpoint_dir": "--checkpoint-dir", "device": "--device",
        "threads": "--threads", "models_dir": "--models-dir", "shard": "--shard",
    }
    for key, flag in names.items():
        if params.get(key) is not None:
            args += [flag, str(params[key])]
    if params.get("compile_model"):
        args.append("--compile")
    if params.get("no_progress"):
        args.append("--no-progress")
    if params.get("no_keep_models"):
        args.append("--no-keep-models")
    # Rank 0 of the workers prints the results, so it prints them in the form asked for.
    if params.get("json_out"):
        args.append("--json")
    if params.get("csv_out"):
        args.append("--csv")
    return args + ["--launcher", "local"]


def _output(json_out: bool, csv_out: bool) -> str:
    return "json" if json_out else "csv" if csv_out else "table"


def _run(spec, runs, *, out: Path, ckpt_root: Path, models_root: Path | None, device: str, launcher: str, nproc_per_node: int,
         compile_model: bool, progress: bool, output: str, argv: list[str], threads: int | None = None) -> None:
    from gmse_cli.cli.output import print_json
    from gmse_cli.errors import TrainError
    from gmse_cli.messages import info as log
    from gmse_cli.progress import status

    # torch's import takes 3-5 s before the first run's line: a bar meanwhile (a line in a log),
    # by the one process that speaks (torchrun's workers are RANK 1...).
    with status("loading torch ...", enabled=progress and os.environ.get("RANK", "0") == "0"):
        from gmse_cli.training.launch import run_local, run_slurm, run_torchrun

    if launcher == "torchrun":
        code = run_torchrun(argv, nproc_per_node=nproc_per_node)
        if code != 0:
            raise TrainError(f"torchrun workers exited with code {code} (see their output above)")
        return  # rank 0 of the workers printed the results: once more here was a second table or JSON document
    if launcher == "slurm":
        outcome = run_slurm(runs, out=out, checkpoint_root=ckpt_root, settings=spec.slurm, sweep=spec.name,
                            models_root=models_root, device=device, compile_model=compile_model, threads=threads,
                            log=log)
    else:
        outcome = run_local(runs, out=out, checkpoint_root=ckpt_root, device=device, progress=progress,
                            compile_model=compile_model, sweep=spec.name, models_root=models_root, log=log)
    from gmse_cli.training.loop import dist_env

    if not dist_env().main:
        return
    if outcome.submitted and not outcome.records and not outcome.failed:
        if output == "json":
            print_json([], submitted=outcome.submitted, out=str(out))
        return
    if outcome.records or not outcome.failed:
        render_records(records_for(out, runs), output=output)
    if outcome.failed:  # each named above with its log; the runs that finished are recorded and printed
        raise TrainError(f"{len(outcome.failed)} of {len(outcome.submitted)} job(s) failed (see above); "
                         "the same command again submits the runs not recorded")
