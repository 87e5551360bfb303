"""The straight-through function every lossy stage goes through, and the numpy view the CPU
kernels read: forward runs a stage, backward multiplies the gradient by the stage's mask."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["StageFn", "apply_masked", "cpu_array"]

# A stage's forward: (compressed value, backward mask or None for plain straight-through).
StageFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


class _MaskedSTE(torch.autograd.Function):
    """Forward: the compressed value; backward: grad * mask (or grad itself if mask is None)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: StageFn):
        y, mask = fn(x)
        ctx.has_mask = mask is not None
        if mask is not None:
            ctx.save_for_backward(mask)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.has_mask:
            return grad, None
        (mask,) = ctx.saved_tensors
        return torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device)), None


def cpu_array(x: torch.Tensor) -> np.ndarray:
    """``x``'s values as a C-contiguous numpy array for the numba kernels. A leaf that requires
    grad (a parameter) is copied first: torch marks a storage that numpy views as not
    resizable, and FSDP frees its unsharded parameters by resizing their storage."""
    t = x.detach()
    if x.is_leaf and x.requires_grad:
        t = t.clone()
    return t.contiguous().numpy()


def apply_masked(x: torch.Tensor, fn: StageFn) -> torch.Tensor:
    """``fn(x)``'s value; under autograd, with ``fn``'s mask applied to the gradient."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaskedSTE.apply(x, fn)
    with torch.no_grad():
        return fn(x)[0]
