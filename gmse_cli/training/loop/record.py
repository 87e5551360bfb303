"""The measured parts of a run record: the format's GMSE per stage, and the loss curve."""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.training.config import RunConfig
from gmse_cli.training.results import LossCurve, StageGmse

__all__ = ["format_gmse", "loss_curve_summary"]

_CURVE_POINTS = 64


def format_gmse(cfg: RunConfig) -> tuple[dict[str, list[StageGmse]], dict[str, float]]:
    """GMSE of each lossy stage and of the whole format, for weights and activations."""
    from gmse_cli.gmse import gmse_of, stage_gmse

    stages: dict[str, list[StageGmse]] = {}
    whole: dict[str, float] = {}
    for role, fmt in (("weights", cfg.weights), ("activations", cfg.activations)):
        if fmt is None:
            continue
        stages[role] = [
            StageGmse(family=str(fam.value), name=est.name, gmse=est.gmse, ci_low=est.ci_low,
                      ci_high=est.ci_high, method=est.method)
            for fam, est in stage_gmse(fmt)
        ]
        whole[role] = gmse_of(fmt).gmse
    return stages, whole


def loss_curve_summary(train_loss: list[float], eval_steps: list[int], eval_loss: list[float]) -> LossCurve:
    """At most ~64 spans of the per-step losses, each summarized by its mean."""
    finite = [v for v in train_loss if math.isfinite(v)]
    n = len(train_loss)
    steps: list[int] = []
    means: list[float] = []
    if n:
        edges = np.unique(np.linspace(0, n, min(n, _CURVE_POINTS) + 1).round().astype(int))
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            chunk = [v for v in train_loss[a:b] if math.isfinite(v)]
            if chunk:
                steps.append(int(b))
                means.append(float(np.mean(chunk)))
    tail = train_loss[max(0, n - max(1, n // 10)):]
    tail = [v for v in tail if math.isfinite(v)]
    return LossCurve(
        steps=steps,
        train_loss=means,
        eval_steps=list(eval_steps),
        eval_loss=list(eval_loss),
        final_train_loss=float(np.mean(tail)) if tail else None,
        min_train_loss=min(finite) if finite else None,
    )
