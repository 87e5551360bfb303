"""What one training run will do, computed without torch: its token budget, steps and FLOPs
(:class:`RunPlan`, shown by ``--dry-run``), and how its batch splits over processes.

The run itself is a :class:`~gmse_cli.training.config.RunConfig`; its plan follows from it.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

from pydantic import Field

from gmse_cli.errors import TrainError
from gmse_cli.frozen import Frozen

if TYPE_CHECKING:
    # only named in annotations: gmse_cli.training.config names this module's functions too
    from gmse_cli.training.config import RunConfig

__all__ = ["RunPlan", "budget_steps", "plan_run", "warmup_steps", "split_batch"]


class RunPlan(Frozen):
    """What a run will do, computed without torch (shown by ``--dry-run``)."""

    name: str
    run_key: str
    preset: str
    params: int = Field(description="N, non-embedding parameters")
    tokens_per_step: int
    steps: int
    tokens: int = Field(description="D = steps x tokens per step (tokens actually trained on)")
    warmup_steps: int
    flops: float = Field(description="training FLOPs (6N per token + head + attention)")


def budget_steps(cfg: RunConfig) -> int:
    """Whole steps in tokens_per_param x N tokens (before max_steps), in exact arithmetic on the
    decimal written: 4.1 x N tokens that make whole steps are not a step short, as the float
    4.1 x N (4.0999... x N) made them."""
    n = cfg.model_preset.non_embedding_params
    return math.floor(Fraction(repr(cfg.tokens_per_param)) * n / cfg.tokens_per_step)


def plan_run(cfg: RunConfig, *, vocab_size: int) -> RunPlan:
    """Token budget and step count; raises :class:`TrainError` if the budget is under one step."""
    preset = cfg.model_preset
    n = preset.non_embedding_params
    budget = cfg.tokens_per_param * n
    if not math.isfinite(preset.flops_per_token(vocab_size=vocab_size, context=cfg.context) * budget):
        raise TrainError(
            f"tokens_per_param={cfg.tokens_per_param:g} gives {budget:.3g} tokens for preset '{preset.name}' "
            f"(N={n:,}), whose training FLOPs overflow a float; lower --tokens-per-param"
        )
    steps = budget_steps(cfg)
    if steps < 1:
        raise TrainError(
            f"tokens_per_param={cfg.tokens_per_param:g} gives {budget:,.0f} tokens for preset "
            f"'{preset.name}' (N={n:,}), less than one step of {cfg.tokens_per_step:,} tokens; "
            "raise --tokens-per-param or lower the batch size or context"
        )
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    tokens = steps * cfg.tokens_per_step
    return RunPlan(
        name=cfg.name,
        run_key=cfg.run_key(),
        preset=preset.name,
        params=n,
        tokens_per_step=cfg.tokens_per_step,
        steps=steps,
        tokens=tokens,
        warmup_steps=warmup_steps(steps, cfg.optim.warmup_fraction),
        flops=preset.flops_per_token(vocab_size=vocab_size, context=cfg.context) * tokens,
    )


def warmup_steps(steps: int, fraction: float) -> int:
    return math.floor(steps * fraction)


def split_batch(cfg: RunConfig, processes: int) -> tuple[int, int]:
    """(sequences per process per step, sequences per forward pass) when ``processes`` train
    the run together. Needs no torch: launchers check it before any worker starts."""
    if cfg.batch_size % processes:
        raise TrainError(f"batch_size {cfg.batch_size} is not divisible by the {processes} processes")
    local = cfg.batch_size // processes
    micro = min(cfg.micro_batch_size or local, local)
    if local % micro:
        raise TrainError(f"micro_batch_size {micro} does not divide the per-process batch {local}")
    return local, micro
