"""What one training run is, as validated data (no torch: dry runs and schemas use it anywhere).

A :class:`RunConfig` fixes everything that changes the result of a run: model preset, weight and
activation formats, token budget, seed, batch, data, tokenizer, optimizer and gradient
estimator. Its :meth:`RunConfig.run_key` (a hash of that content) names the run's checkpoint
folder and lets a sweep skip runs already in its results file. Settings that do not change the
result (progress display, checkpoint cadence, device) stay out of the key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from gmse_cli.errors import DataError, SpecError, TrainError
from gmse_cli.frozen import FrozenInput
from gmse_cli.inputs import does_not_exist, exists
from gmse_cli.limits import MAX_SEED
from gmse_cli.spec import Format, resolve_format
from gmse_cli.spec.format import validation_message

# A run's plan lives in gmse_cli.training.plan; its names are here too, where callers have always
# found them.
from gmse_cli.training.plan import RunPlan, budget_steps, plan_run, split_batch
from gmse_cli.training.presets import ModelPreset, get_preset

__all__ = [
    "DEFAULT_TOKENIZER",
    "DataConfig",
    "OptimConfig",
    "EstimatorConfig",
    "RunConfig",
    "RunPlan",
    "plan_run",
    "budget_steps",
    "resolve_weight_format",
    "resolve_activation_format",
    "is_identity_format",
    "config_error",
    "check_trainable",
    "check_format_fits",
    "check_local_inputs",
    "split_batch",
]

# The paper's tokenizer. The meta-llama repository is gated (set HF_TOKEN after accepting its
# licence); "hf-internal-testing/llama-tokenizer" is an ungated copy of the same tokenizer.
DEFAULT_TOKENIZER = "meta-llama/Llama-2-7b-hf"
C4_SOURCE = "c4"


def config_error(exc: ValidationError, *, source: str) -> TrainError:
    """One line naming the field, the bad value and what is allowed."""
    return TrainError(f"{source}: {validation_message(exc)}")


def is_identity_format(fmt: Format) -> bool:
    """A plain fp32 cast: the trainer's parameters already are fp32, so nothing is applied."""
    if len(fmt.stages) != 1:
        return False
    stage = fmt.stages[0]
    return (
        stage.kind == "quantize"
        and stage.grid == "fp"
        and stage.exponent_bits == 8
        and stage.mantissa_bits == 23
        and stage.scale == "none"
    )


def resolve_weight_format(value: Any) -> Format:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return resolve_format("fp32")
    if isinstance(value, dict):
        return Format.model_validate(value)
    return resolve_format(value)


def resolve_activation_format(value: Any) -> Format | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, dict):
        return Format.model_validate(value)
    fmt = resolve_format(value)
    # Full-precision activations are "none": an fp32 activation format would only cost time.
    return None if is_identity_format(fmt) else fmt


class DataConfig(FrozenInput):
    """Where tokens come from."""

    source: str = Field(
        default=C4_SOURCE,
        description="'c4' (allenai/c4 'en', streamed) or a local file or folder of text, "
        ".xz/.gz/.bz2 text, JSON lines or parquet",
    )
    tokenizer: str = Field(
        default=DEFAULT_TOKENIZER,
        description="a hub tokenizer id, a local tokenizer.json, or 'bpe:V' (a byte-level BPE "
        "of V tokens trained on the training split and cached)",
    )
    val_fraction: float = Field(
        default=0.02, gt=0, lt=0.5, description="local corpora: the tail of the text held out"
    )
    text_field: str = Field(default="text", description="JSON lines / parquet: the text column")

    @field_validator("source", "tokenizer")
    @classmethod
    def _nonempty(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            # a ValueError, so that the error names the file and the key (data.source), not only this
            raise ValueError(f"{info.field_name} must not be empty")
        return value.strip()

    @field_validator("tokenizer")
    @classmethod
    def _bpe(cls, value: str) -> str:
        if value.lower().startswith("bpe:"):
            size = value[4:]
            # the limits of `uscl tokenizer train` and --tokenizer: 256 bytes, <|endoftext|> and a merge
            # at least (bpe:257 planned, then failed when its run started); ASCII digits, as every option
            if not (size.isascii() and size.isdigit()) or not 258 <= int(size) <= 1 << 20:
                raise TrainError(f"tokenizer '{value}': write bpe:V with V a vocabulary size in 258..1048576")
            return f"bpe:{int(size)}"
        return value


class OptimConfig(FrozenInput):
    """AdamW with linear warm-up then cosine decay (paper.md section 3)."""

    lr: float | None = Field(default=None, gt=0, description="peak rate; None = the preset's")
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    # QuEST's OneCycle schedule ends at peak/10 (div_factor 100, final_div_factor 0.1).
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0)


class EstimatorConfig(FrozenInput):
    """Gradient rules of the compressed forward pass (see gmse_cli.training.torch_compress)."""

    trust: bool = Field(default=True, description="QuEST trust mask on straight-through gradients")
    rbbm_p: float | None = Field(
        default=None,
        gt=0,
        lt=0.5,
        description="RBBM band: T_p = RMS(w) * Phi^-1(0.5 + p); None = plain straight-through",
    )


class RunConfig(FrozenInput):
    """Everything that determines the outcome of one training run."""

    preset: str
    weights: Format = Field(default_factory=lambda: resolve_format("fp32"))
    activations: Format | None = None
    tokens_per_param: float = Field(gt=0)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    context: int = Field(default=None, ge=8, description="sequence length; None = the preset's (paper: 512)")
    batch_size: int = Field(
        default=None, ge=1, description="sequences per optimizer step over all ranks; None = the preset's"
    )
    micro_batch_size: int | None = Field(
        default=None, ge=1, description="sequences per forward pass per rank (gradient accumulation)"
    )
    max_steps: int | None = Field(default=None, ge=1, description="cap on steps (the budget shrinks)")
    eval_tokens: int = Field(default=1 << 20, ge=1, description="held-out tokens for the final loss")
    eval_every: int = Field(default=0, ge=0, description="steps between evaluations; 0 = only at the end")
    periodic_eval_tokens: int = Field(default=1 << 17, ge=1)
    checkpoint_every: int = Field(default=1000, ge=0, description="steps between checkpoints; 0 = none")
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        return get_preset(value).name

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        # context and batch size default to the preset's (paper sizes: 512 x 512 sequences).
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            preset = get_preset(data["preset"])
            data = dict(data)
            if data.get("context") is None:
                data["context"] = preset.context
            if data.get("batch_size") is None:
                data["batch_size"] = preset.batch_size
        return data

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        return value if isinstance(value, Format) else resolve_weight_format(value)

    @field_validator("activations", mode="before")
    @classmethod
    def _acts(cls, value: Any) -> Any:
        if isinstance(value, Format):
            return None if is_identity_format(value) else value
        return resolve_activation_format(value)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise TrainError(
                f"micro_batch_size {self.micro_batch_size} does not divide batch_size {self.batch_size}"
            )
        if self.estimator.rbbm_p is not None:
            formats = [self.weights] + ([self.activations] if self.activations else [])
            if not any(f.sparsifier is not None for f in formats):
                raise TrainError(
                    f"estimator.rbbm_p={self.estimator.rbbm_p} needs a sparse format "
                    f"(weights are '{self.weights.display_name}'); drop rbbm_p or add a sparsify stage"
                )
            # Found here, not when the run's model is built (after the sweep's earlier runs).
            for fmt in formats:
                ranked_blocks = [s for s in fmt.stages if s.kind == "sparsify" and s.unit > 1]
                if ranked_blocks:
                    raise TrainError(
                        f"estimator.rbbm_p={self.estimator.rbbm_p} is defined for magnitude and N:M sparsity of "
                        f"single entries, not for the blocks of '{fmt.display_name}'; drop rbbm_p for a "
                        "straight-through gradient"
                    )
        return self

    # -- derived ------------------------------------------------------------------------------

    @property
    def model_preset(self) -> ModelPreset:
        return get_preset(self.preset)

    @property
    def lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else self.model_preset.lr

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    @property
    def name(self) -> str:
        acts = self.activations.display_name if self.activations else "none"
        rbbm = f"-rbbm{self.estimator.rbbm_p:g}" if self.estimator.rbbm_p is not None else ""
        trust = "" if self.estimator.trust else "-ste"
        return (
            f"{self.preset}/w:{self.weights.display_name}/a:{acts}{rbbm}{trust}"
            f"/tpp{self.tokens_per_param:g}/s{self.seed}"
        )

    def content_key(self) -> str:
        """Like :meth:`run_key` but blind to how the formats are named (``lm3`` and ``lloyd-max-3``,
        ``mxfp4`` and ``e2m1-g32-absmax-se8m0``): two runs with equal content keys train the same."""
        payload = self.model_dump(mode="json", exclude={"checkpoint_every"})
        for role in ("weights", "activations"):
            if payload.get(role) is not None:
                payload[role] = payload[role]["stages"]
        return _hash16(payload)

    def run_key(self) -> str:
        """Content hash of everything that changes the result (16 hex digits)."""
        return _hash16(self.model_dump(mode="json", exclude={"checkpoint_every"}))


def _hash16(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_trainable(fmt: Format) -> None:
    """Raise :class:`TrainError` if the trainer has no gradient rule for a stage of ``fmt``.

    Every compressor is piecewise constant, so each stage needs an estimator: scalar grids
    (trust-masked straight-through), magnitude and N:M sparsity (straight-through or RBBM),
    vq (norm-masked straight-through) and rotations (exact). Block sparsity has none here:
    the paper defines estimators for magnitude and N:M masks only, and a block mask chosen by
    block norms is covered by neither the straight-through rule it studied nor RBBM.
    """
    for stage in fmt.stages:
        if stage.kind == "sparsify" and stage.pattern == "block":
            raise TrainError(
                f"format '{fmt.display_name}': the trainer cannot differentiate block sparsity "
                "(no gradient estimator for block masks); use magnitude (sparseP) or N:M sparsity"
            )


def check_format_fits(cfg: RunConfig) -> None:
    """Formats must be trainable and suit every compressed linear's input dimension."""
    preset = cfg.model_preset
    for role, fmt in (("weights", cfg.weights), ("activations", cfg.activations)):
        if fmt is None:
            continue
        check_trainable(fmt)
        for dim in sorted({preset.d_model, preset.ffn_dim}):
            try:
                fmt.check_row_length(dim)
            except SpecError as exc:
                raise TrainError(
                    f"{role} format '{fmt.display_name}' does not fit preset '{preset.name}' "
                    f"(a linear layer has input dimension {dim}): {exc}"
                ) from None



def check_local_inputs(cfg: RunConfig) -> None:
    """A local corpus and a tokenizer file a run names must exist: found at planning time (a dry
    run says so too), not after the first runs of a sweep have trained."""
    source = cfg.data.source
    if source.lower() != C4_SOURCE and not exists(source):
        raise DataError(f"data path '{source}' {does_not_exist(source)}; give a text/JSONL/parquet file or folder, or 'c4'")
    tokenizer = cfg.data.tokenizer
    looks_local = tokenizer.endswith(".json") or tokenizer.startswith(("/", ".", "~"))
    if looks_local and not exists(tokenizer):
        raise DataError(f"tokenizer file '{tokenizer}' {does_not_exist(tokenizer)}; give a tokenizer.json, a hub id or bpe:V")
