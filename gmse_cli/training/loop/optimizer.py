"""The optimizer's settings over a run: which parameters decay, and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = ["lr_at", "param_groups"]


def lr_at(step: int, *, steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up to ``peak``, then cosine to
    ``peak * min_ratio`` at the last update."""
    assert 0 <= step < steps, (step, steps)
    if step < warmup:
        return peak * (step + 1) / warmup  # the first update already moves: no zero-rate step
    span = steps - warmup - 1
    progress = 1.0 if span <= 0 else (step - warmup) / span
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: ``weight_decay`` on matrices, none on the rest."""
    # Decay matrices (linears, embeddings, head), not norm gains: the usual GPT practice (QuEST
    # decays the block linears only; README, Training, lists the differences).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
