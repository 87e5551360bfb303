"""Sweep specs (TOML): model sizes x tokens per parameter x weight formats x activation formats
x seeds, plus shared data, tokenizer, optimizer, estimator and Slurm settings.

::

    name = "cpu-mini"
    presets = ["tiny"]
    tokens_per_param = [20]
    weights = ["fp32", "int4", "int2"]
    activations = ["none", "same"]    # "same" = the weight format; "none" = full precision
    seeds = [0]

    [train]      # any RunConfig setting: context, batch_size, micro_batch_size, max_steps,
                 # eval_tokens, eval_every, periodic_eval_tokens, checkpoint_every
    [data]       # source, tokenizer, val_fraction, text_field
    [optim]      # lr, beta1, beta2, weight_decay, warmup_fraction, min_lr_ratio, grad_clip
    [estimator]  # trust, rbbm_p
    [slurm]      # resources for --launcher slurm

    [[schemes]]  # optional explicit (weights, activations) pairs, added to the product
    weights = "2:4+int4"
    activations = "int4"

Relative data paths are read from the working directory, else beside the spec file.
This module needs no torch: ``--dry-run`` plans a sweep anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from gmse_cli.errors import DataError, SpecError, TrainError, UsclError, is_control
from gmse_cli.frozen import FrozenInput
from gmse_cli.inputs import does_not_exist, exists, is_file, user_path
from gmse_cli.tomlfile import read_toml
from gmse_cli.training.config import (
    DataConfig,
    EstimatorConfig,
    OptimConfig,
    RunConfig,
    config_error,
    resolve_activation_format,
    resolve_weight_format,
)
from gmse_cli.training.plan import RunPlan, plan_run
from gmse_cli.training.presets import get_preset, padded_vocab

__all__ = [
    "SweepSpec",
    "TrainSettings",
    "SlurmSettings",
    "SchemeEntry",
    "load_sweep",
    "shipped_sweep",
    "shipped_sweep_names",
    "expand_sweep",
    "PlannedRun",
    "check_slurm_device",
    "plan_sweep",
    "DEFAULT_VOCAB_FOR_PLANS",
    "plan_vocab",
    "processes_per_run",
]

# Dry runs may not have the tokenizer at hand; FLOPs use this vocabulary (Llama-2's) unless told.
DEFAULT_VOCAB_FOR_PLANS = 32000


def plan_vocab(tokenizer: str) -> int:
    """The vocabulary a plan counts FLOPs (and times steps) with, as the run will build it: V of
    ``bpe:V``, a local tokenizer.json's own size (or a folder's tokenizer.json), else Llama-2's
    32,000 (a hub tokenizer is not fetched just to plan). A tiny model's FLOPs are mostly its
    head, so a 2,048-token file planned as 32,000 overstated them sixfold."""
    if tokenizer.startswith("bpe:"):
        return int(tokenizer[4:])
    path = user_path(tokenizer)
    if is_file(path) or is_file(path / "tokenizer.json"):
        from gmse_cli.training.data.tokenizer import load_tokenizer

        return load_tokenizer(str(path)).vocab_size
    return DEFAULT_VOCAB_FOR_PLANS


def _positive_tpp(value: list[float]) -> list[float]:
    for v in value:
        if not v > 0 or v != v or v == float("inf"):
            raise TrainError(f"tokens_per_param {v} must be a positive finite number")
    return value


class TrainSettings(FrozenInput):
    """RunConfig settings shared by every run of a sweep."""

    context: int | None = Field(default=None, ge=8, description="None = each preset's")
    batch_size: int | None = Field(default=None, ge=1, description="None = each preset's")
    micro_batch_size: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    eval_tokens: int = Field(default=1 << 20, ge=1)
    eval_every: int = Field(default=0, ge=0)
    periodic_eval_tokens: int = Field(default=1 << 17, ge=1)
    checkpoint_every: int = Field(default=1000, ge=0)


class SlurmSettings(FrozenInput):
    """Resources of each Slurm job (one run per job) for ``--launcher slurm`` (submitit)."""

    cluster: Literal["slurm", "local", "debug"] = Field(
        default="slurm", description="submitit executor: slurm; local/debug run on this machine"
    )
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=8, ge=0)
    cpus_per_task: int = Field(default=8, ge=1)
    mem_gb: int | None = Field(default=None, ge=1)
    timeout_min: int = Field(default=180, ge=1)
    max_parallel: int = Field(default=32, ge=1, description="jobs running at once (array throttle)")
    folder: str = Field(default="slurm-logs/%j", description="submitit logs; %j is the job id")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job")

    @field_validator("partition", "account", "qos", "constraint", "folder")
    @classmethod
    def _one_line(cls, value: str | None, info: Any) -> str | None:
        # submitit writes each as '#SBATCH --key=value': a newline in a value began a line of
        # shell in the job script (and ended the #SBATCH header), hidden outside `setup`
        if value is not None and any(is_control(ch) for ch in value):
            raise SpecError(f"[slurm] {info.field_name} = {value!r} holds a control character; it is one line of text")
        return value


class SchemeEntry(FrozenInput):
    """Explicit (weights, activations) pairs; each may narrow the sweep's presets, tokens per
    parameter and seeds (e.g. a second seed on a few configurations to measure seed noise)."""

    weights: str
    activations: str | None = None
    presets: list[str] | None = Field(default=None, min_length=1)
    tokens_per_param: list[float] | None = Field(default=None, min_length=1)
    seeds: list[int] | None = Field(default=None, min_length=1)

    @field_validator("presets")
    @classmethod
    def _presets(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [get_preset(p).name for p in value]

    @field_validator("tokens_per_param")
    @classmethod
    def _tpp(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else _positive_tpp(value)


class SweepSpec(FrozenInput):
    """A training sweep (a sweep TOML file): the model presets, token budgets and formats it runs."""

    name: str
    description: str = ""
    presets: list[str] = Field(min_length=1)
    tokens_per_param: list[float] = Field(min_length=1)
    weights: list[str] = Field(default_factory=lambda: ["fp32"])
    activations: list[str] = Field(default_factory=lambda: ["none"])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    schemes: list[SchemeEntry] = Field(default_factory=list)
    models_dir: str | None = Field(default=None, description="where finished runs' final models are kept")
    train: TrainSettings = Field(default_factory=TrainSettings)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @field_validator("presets")
    @classmethod
    def _presets(cls, value: list[str]) -> list[str]:
        return [get_preset(p).name for p in value]

    @field_validator("tokens_per_param")
    @classmethod
    def _tpp(cls, value: list[float]) -> list[float]:
        return _positive_tpp(value)

    @field_validator("weights", "activations", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return ["none" if v is None else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.weights and not self.schemes:
            raise TrainError("sweep: give 'weights' (a list of formats) or [[schemes]]")
        if self.weights and not self.activations:  # the product would hold no run, silently
            raise TrainError("sweep: 'activations' is empty; give [\"none\"] for full-precision activations")
        return self


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep TOML file (errors name the file and the field). A name that is
    no file (``cpu-quick`` or ``cpu-quick.toml``) is a shipped sweep's, as an installed wheel
    holds them (``gmse_cli/sweeps``) where a checkout has ``train/``."""
    path = Path(path)
    if not exists(path):
        shipped = shipped_sweep(str(path))
        if shipped is None:
            names = ", ".join(shipped_sweep_names())
            raise DataError(f"sweep file {path} {does_not_exist(path)} (shipped sweeps, by name: {names})")
        path = shipped
    raw = read_toml(path, what="sweep file", error=SpecError, read_error=DataError)
    raw.setdefault("name", path.stem)
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        data["source"] = _resolve_source(data["source"], path.parent)
    # A tokenizer.json and format files the spec names follow the same rule as its corpus.
    if isinstance(data, dict) and isinstance(data.get("tokenizer"), str) and data["tokenizer"].endswith(".json"):
        data["tokenizer"] = _resolve_source(data["tokenizer"], path.parent)
    schemes = raw.get("schemes")
    for table in [raw, *(s for s in (schemes if isinstance(schemes, list) else ()) if isinstance(s, dict))]:
        for key in ("weights", "activations"):
            names = table.get(key)
            if isinstance(names, list):
                table[key] = [_format_path(n, path.parent) for n in names]
            elif isinstance(names, str):
                table[key] = _format_path(names, path.parent)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source=str(path)) from None


def shipped_sweep_names() -> list[str]:
    """The names of the sweep specs shipped with uscl (``train/`` in a checkout)."""
    from gmse_cli.paths import sweeps_dir

    return sorted(p.stem for p in sweeps_dir().glob("*.toml"))


def shipped_sweep(name: str) -> Path | None:
    """The shipped sweep spec called ``name`` (with or without ``.toml``), else None."""
    from gmse_cli.paths import sweeps_dir

    stem = name[:-5] if name.lower().endswith(".toml") else name
    return sweeps_dir() / f"{stem}.toml" if stem in shipped_sweep_names() else None


def _resolve_source(source: str, spec_dir: Path) -> str:
    if source.strip().lower() == "c4" or user_path(source).is_absolute():
        return source
    if exists(source):
        return source
    beside = spec_dir / source
    return str(beside) if exists(beside) else source


def _format_path(name: Any, spec_dir: Path) -> Any:
    """A relative format file (.toml) read from the working directory, else beside the spec."""
    return _resolve_source(name, spec_dir) if isinstance(name, str) and name.lower().endswith(".toml") else name


def _act(value: str | None, weights: str) -> str | None:
    if value is None or value.strip().lower() in ("none", ""):
        return None
    return weights if value.strip().lower() == "same" else value


def _spelling_order(cfg: RunConfig) -> tuple[str, str]:
    """Which of a training's spellings names its run: the name that sorts first, then the run key."""
    return cfg.name, cfg.run_key()


def expand_sweep(spec: SweepSpec, *, overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """Every run of the sweep, in a stable order (preset, tokens/param, scheme, seed).

    ``overrides`` replace RunConfig fields for every run (the CLI's --max-steps, --data ...).
    Duplicate schemes (e.g. 'same' with 'none' weights, or one format under two spellings such as
    'lm3' and 'lloyd-max-3') are dropped; the spelling that sorts first names the run, so that
    reordering the spec's lists changes no run key.
    """
    # (weights, activations, presets, tokens per parameter, seeds) of every scheme
    entries: list[tuple[str, str | None, list[str], list[float], list[int]]] = [
        (w, _act(a, w), spec.presets, spec.tokens_per_param, spec.seeds)
        for w in spec.weights for a in spec.activations
    ]
    entries += [
        (s.weights, _act(s.activations, s.weights), s.presets or spec.presets,
         s.tokens_per_param or spec.tokens_per_param, s.seeds or spec.seeds)
        for s in spec.schemes
    ]
    runs: list[RunConfig] = []
    seen: dict[str, int] = {}
    overrides = overrides or {}
    resolved = _FormatMemo()
    all_presets = dict.fromkeys([*spec.presets, *(p for e in entries for p in e[2])])
    all_tpps = dict.fromkeys([*spec.tokens_per_param, *(t for e in entries for t in e[3])])
    for preset in all_presets:
        for tpp in all_tpps:
            for weights, acts, presets, tpps, seeds in entries:
                if preset not in presets or tpp not in tpps:
                    continue
                for seed in seeds:
                    fields = spec.train.model_dump() | {
                        "preset": preset,
                        "weights": resolved.weights(weights),
                        "activations": resolved.activations(acts),
                        "tokens_per_param": tpp,
                        "seed": seed,
                        "data": spec.data,
                        "optim": spec.optim,
                        "estimator": spec.estimator,
                    } | overrides
                    try:
                        cfg = RunConfig.model_validate(fields)
                    except ValidationError as exc:
                        raise config_error(exc, source=f"sweep '{spec.name}'") from None
                    # the same training spelled twice (lm3 and lloyd-max-3) is one run, at the first
                    # one's place, named by the spelling that sorts first: whatever the spec's order
                    # (two spellings of one name, e.g. a format file that names itself 'int4' with its
                    # own description, are told apart by their run keys)
                    key = cfg.content_key()
                    if key not in seen:
                        seen[key] = len(runs)
                        runs.append(cfg)
                    elif _spelling_order(cfg) < _spelling_order(runs[seen[key]]):
                        runs[seen[key]] = cfg
    return runs


class _FormatMemo:
    """Each format name of a sweep resolved once: resolving reads and parses a catalog file, and
    a sweep of 10^5 runs names the same few formats in every run (it was most of a dry run's
    time). A name that does not resolve is handed on as written, so RunConfig reports it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, Any], Any] = {}

    def _get(self, role: str, value: Any, resolve: Any) -> Any:
        if not isinstance(value, str):
            return value
        key = (role, value)
        if key not in self._seen:
            try:
                self._seen[key] = resolve(value)
            except (UsclError, ValidationError):
                self._seen[key] = value
        return self._seen[key]

    def weights(self, value: Any) -> Any:
        return self._get("weights", value, resolve_weight_format)

    def activations(self, value: Any) -> Any:
        return self._get("activations", value, resolve_activation_format)


class PlannedRun(FrozenInput):
    plan: RunPlan
    est_seconds: float | None = Field(description="rough wall time at the assumed throughput")
    done: bool = Field(description="already in the results file")


def plan_sweep(
    runs: list[RunConfig],
    *,
    vocab_size: int = DEFAULT_VOCAB_FOR_PLANS,
    flops_per_second: float | None = None,
    finished: set[str] | None = None,
) -> list[PlannedRun]:
    """Budgets, steps, FLOPs and a time estimate per run (raises if a budget is under a step)."""
    finished = finished or set()
    out = []
    for cfg in runs:
        plan = plan_run(cfg, vocab_size=padded_vocab(vocab_size))
        est = plan.flops / flops_per_second if flops_per_second else None
        out.append(PlannedRun(plan=plan, est_seconds=est, done=plan.run_key in finished))
    return out


def check_slurm_device(device: str, slurm: SlurmSettings) -> None:
    """``--device cuda`` on Slurm jobs that get no GPU: refused before anything is submitted (and
    in a dry run), else every job fails on its node after its wait in the queue."""
    if device == "cuda" and slurm.cluster == "slurm" and slurm.gpus_per_node == 0:
        raise TrainError("--device cuda with [slurm] gpus_per_node = 0: the jobs would get no GPU")


def processes_per_run(launcher: str, nproc_per_node: int, slurm: SlurmSettings) -> int:
    """How many processes train each run together: torchrun's, or a Slurm job's tasks (one per
    GPU on each node; the local and debug executors run one)."""
    if launcher == "torchrun":
        return nproc_per_node
    if launcher == "slurm" and slurm.cluster == "slurm":
        return slurm.nodes * max(1, slurm.gpus_per_node)
    return 1
