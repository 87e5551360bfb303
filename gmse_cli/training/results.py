"""The results file: one JSON line per finished training run (schema :class:`RunRecord`).

This module imports neither torch nor transformers, so the fitter (``gmse_cli.runs``) can read
results anywhere. Appends are atomic: under an exclusive lock the whole file is rewritten to a
temporary file, fsync'd and renamed over the original (then the folder is fsync'd), so a run
killed mid-append leaves either the old file or the new one -- never a torn line. Results files
hold hundreds of lines, so rewriting costs nothing that matters.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from gmse_cli import locks
from gmse_cli.atomic import write_atomic
from gmse_cli.errors import DataError
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import (
    MAX_RUNS_BYTES,
    does_not_exist,
    exists,
    parse_nested,
    read_text_file,
    strict_json,
)
from gmse_cli.schema.versions import RESULTS_SCHEMA_VERSION, bad_schema

__all__ = [
    "SCHEMA_VERSION",
    "StageGmse",
    "LossCurve",
    "ModelInfo",
    "TrainingInfo",
    "DataIdentity",
    "TokenizerIdentity",
    "RunRecord",
    "append_record",
    "check_appendable",
    "load_records",
    "finished_keys",
]

SCHEMA_VERSION = RESULTS_SCHEMA_VERSION


class StageGmse(Frozen):
    """GMSE of one lossy stage of a format, as gmse_cli.gmse.stage_gmse measured it."""

    family: str = Field(description="quantization, sparsity or vq")
    name: str = Field(description="the stage as a standalone format")
    gmse: float = Field(description="the stage's GMSE alone (a capacity factor of the format)")
    ci_low: float
    ci_high: float
    method: str = Field(description="exact or monte-carlo")


class LossCurve(Frozen):
    """A summary of the training curve (at most ~64 points, each the mean over its span)."""

    steps: list[int] = Field(description="optimizer step at the end of each span")
    train_loss: list[float] = Field(description="mean training loss over the span")
    eval_steps: list[int] = Field(default_factory=list)
    eval_loss: list[float] = Field(default_factory=list, description="periodic held-out loss")
    final_train_loss: float | None = Field(description="mean training loss over the last 10% of steps")
    min_train_loss: float | None


class ModelInfo(Frozen):
    preset: str
    layers: int
    heads: int
    d_model: int
    ffn_dim: int
    vocab_size: int
    context: int
    non_embedding_params: int
    embedding_params: int


class TrainingInfo(Frozen):
    steps: int
    tokens_per_step: int
    batch_size: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    beta1: float
    beta2: float
    weight_decay: float
    grad_clip: float | None
    trust: bool
    rbbm_p: float | None
    precision: str = Field(description="fp32, or bf16 autocast")
    world_size: int = Field(description="processes that trained the run (its last session's, after a resume)")
    world_sizes: list[int] | None = Field(
        default=None, description="each session's process count, when resuming changed it; null when one count trained it all")
    parallel: str = Field(description="none, ddp or fsdp")


class DataIdentity(Frozen):
    source: str = Field(description="'c4' or the local path as given")
    sha256: str = Field(description="content hash of the corpus (local) or of the cached tokens (c4)")
    train_tokens: int
    val_tokens: int
    val_fraction: float | None


class TokenizerIdentity(Frozen):
    source: str
    sha256: str = Field(description="hash of the tokenizer's serialized JSON")
    vocab_size: int


class RunRecord(Frozen):
    """One finished run. ``params`` is N (non-embedding), ``tokens`` is D (tokens trained on)."""

    # ``model_dir`` is a field, not pydantic API: pydantic < 2.10 warns of any ``model_`` name
    # unless the namespace is released (the config merges with Frozen's)
    model_config = ConfigDict(protected_namespaces=())
    schema_version: Literal[1] = SCHEMA_VERSION
    run_key: str = Field(description="hash of the run configuration (skip key for sweeps)")
    name: str
    status: Literal["ok", "diverged"]
    weights: str = Field(description="weight format display name")
    weights_spec: dict[str, Any] = Field(description="the weight Format, model_dump(mode='json')")
    activations: str | None = Field(description="activation format name; null = full precision")
    activations_spec: dict[str, Any] | None
    stage_gmse: dict[str, list[StageGmse]] = Field(
        description="'weights' and (if any) 'activations': GMSE of each lossy stage, in order"
    )
    format_gmse: dict[str, float] = Field(description="GMSE of the whole weight / activation format")
    params: int
    tokens: int
    tokens_per_param: float
    val_loss: float | None = Field(description="final held-out loss; null when diverged")
    val_tokens: int
    loss_curve: LossCurve
    model: ModelInfo
    training: TrainingInfo
    data: DataIdentity
    tokenizer: TokenizerIdentity
    seed: int
    device: str
    wall_time_s: float
    uscl_version: str
    torch_version: str
    finished_at: str = Field(description="UTC time, ISO 8601")
    sweep: str | None = None
    model_dir: str | None = Field(
        default=None,
        description="the kept final model (a Hugging Face folder), relative to the results file's folder",
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Without locks (Windows, Lustre without flock) two processes appending are not kept apart.
    if not locks.AVAILABLE:
        yield
        return
    # read-only where another user made it 0644 beside a group-writable results file (that
    # failed the append, after the training); over NFS it then takes no lock (locks.held)
    fd = locks.open_lock_file(_lock_path(path))
    try:
        with locks.held(fd):
            yield
    finally:
        os.close(fd)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def check_appendable(path: str | Path) -> None:
    """Raise DataError (one line) unless a run can be appended to the results file ``path``: run
    before any training, after :func:`~gmse_cli.atomic.check_output_path` (the file itself and
    its folder). Checks what it alone does not: the lock file beside it opens."""
    path = Path(path)
    if not locks.AVAILABLE or not _lock_path(path).exists():
        return  # made by the first append, in a folder already checked
    try:
        os.close(locks.open_lock_file(_lock_path(path)))
    except OSError as exc:
        raise DataError(f"cannot append to results file {path}: its lock file "
                        f"{path.name}.lock: {(exc.strerror or str(exc)).lower()} (choose another path)") from None


def append_record(path: str | Path, record: RunRecord) -> bool:
    """Append one line atomically (lock, copy + new line to a temp file, fsync, rename, fsync dir).

    A run already in the file is not appended again (returns False): two sweeps writing one
    results file may both finish a run, and a fit must count it once."""
    path = Path(path)
    line = record.model_dump_json() + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            old = read_text_file(path, what="results file", error=DataError, limit=MAX_RUNS_BYTES).encode() \
                if path.exists() else b""
            if old and not old.endswith(b"\n"):
                raise DataError(f"{path}: the last line is incomplete; it is not a uscl results file")
            if record.run_key in finished_keys(path):
                return False
            write_atomic(path, old + line.encode())
        return True
    except OSError as exc:  # a full disk: the run's checkpoint stays, so a rerun loses nothing
        raise DataError(f"cannot append to results file {path}: {exc.strerror or exc} "
                        "(the finished run's checkpoint is kept; rerun to record it)") from None


def load_records(path: str | Path) -> list[RunRecord]:
    """Every record of a results file; a line that is not a valid record raises DataError."""
    path = Path(path)
    if not exists(path):
        raise DataError(f"results file {path} {does_not_exist(path)}")
    text = read_text_file(path, what="results file", error=DataError, limit=MAX_RUNS_BYTES)
    records: list[RunRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = parse_nested(strict_json, line, where=f"{path}:{number}", error=DataError)
        except json.JSONDecodeError:
            raise DataError(
                f"{path}:{number}: not a JSON line; a results file holds one JSON object per line "
                "(give --out a new file name)"
            ) from None
        newer = (bad_schema(data["schema_version"], SCHEMA_VERSION, f"{path}:{number}: the run record")
                 if isinstance(data, dict) and "schema_version" in data else None)
        if newer:
            raise DataError(newer)
        try:
            records.append(RunRecord.model_validate(data))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise DataError(f"{path}:{number}: not a uscl run record ({where}: {err.get('msg')})") from None
    return records


def finished_keys(path: str | Path) -> set[str]:
    """Run keys already recorded (ok or diverged); empty if the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return set()
    return {r.run_key for r in load_records(path)}
