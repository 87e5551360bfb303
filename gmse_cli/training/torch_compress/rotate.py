"""Rotations in torch: blockwise Hadamard, the twin of :mod:`gmse_cli.compress.rotate`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from gmse_cli.spec import Rotate

__all__ = ["hadamard_torch"]


@lru_cache(maxsize=64)
def _signs(stage: Rotate) -> np.ndarray:
    from gmse_cli.compress.rotate import signs

    return signs(stage)


def hadamard_torch(x: torch.Tensor, stage: Rotate, *, inverse: bool = False) -> torch.Tensor:
    """Blockwise orthonormal Hadamard (H D v; inverse D H v) of each row of float32 ``x``.

    The same float32 butterflies in the same order as gmse_cli.compress.rotate's kernel, so
    the result is equal bit for bit; built from differentiable ops (the gradient is H^T).
    """
    rows, n = x.shape
    block = stage.block
    v = x.reshape(rows, n // block, block)
    d = None
    if stage.random_signs:
        d = torch.as_tensor(_signs(stage), device=x.device)
        if not inverse:
            v = v * d
    h = 1
    while h < block:
        pairs = v.reshape(rows, n // block, block // (2 * h), 2, h)  # pairs (j, j + h) in 2h-groups
        a, c = pairs[..., 0, :], pairs[..., 1, :]
        v = torch.stack((a + c, a - c), dim=-2).reshape(rows, n // block, block)
        h *= 2
    v = v * torch.tensor(np.float32(1.0 / np.sqrt(block)), device=x.device)
    if d is not None and inverse:
        v = v * d
    return v.reshape(rows, n)
