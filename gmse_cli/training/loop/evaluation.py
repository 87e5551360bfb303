"""Held-out evaluation: the mean next-token loss over a set of windows, across ranks."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gmse_cli.training.loop.device import autocast
from gmse_cli.training.loop.distributed import DistEnv, all_sum

__all__ = ["evaluate"]

_EVAL_BATCH = 16


@torch.no_grad()
def evaluate(model: nn.Module, windows: np.ndarray, *, env: DistEnv, device: torch.device) -> float:
    """Mean next-token loss over ``windows`` (split across ranks; every rank runs as many
    forward passes, padding with zero-weight batches, so sharded models stay in step)."""
    was_training = model.training
    model.eval()
    mine = windows[env.rank :: env.world]
    per_rank = math.ceil(len(windows) / env.world)
    batches = math.ceil(per_rank / _EVAL_BATCH)
    total = 0.0
    count = 0.0
    for b in range(batches):
        chunk = mine[b * _EVAL_BATCH : (b + 1) * _EVAL_BATCH]
        weight = 1.0
        if len(chunk) == 0:
            chunk, weight = windows[:1], 0.0
        t = torch.from_numpy(chunk).to(device)
        with autocast(device):
            logits = model(input_ids=t[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1), reduction="sum")
        total += weight * float(loss)
        count += weight * t[:, 1:].numel()
    total, count = all_sum(env, [total, count], device)
    model.train(was_training)
    return total / count
