"""Sparsity masks in torch: the twin of :mod:`gmse_cli.compress.sparsity` (magnitude, N:M and
block masks) and the RBBM backward mask."""

from __future__ import annotations

import math

import torch

from gmse_cli.errors import TrainError
from gmse_cli.spec import Sparsify, SparsityPattern
from gmse_cli.training.torch_compress.ste import cpu_array

__all__ = ["TorchSparsify", "rbbm_mask", "sparsity_mask_torch"]

_F64 = torch.float64


def rbbm_mask(x: torch.Tensor, kept: torch.Tensor, p: float, *, per_row: bool = True,
              group: int | None = None) -> torch.Tensor:
    """RBBM backward mask (paper.md section 3) for values ``x`` and forward mask ``kept``.

    T_p = RMS(x) * Phi^-1(0.5 + p); T_k = the smallest kept magnitude; the gradient passes where
    |x| < min(T_p, T_k) or |x| > max(T_p, T_k). Statistics per row (``per_row``), per tensor,
    or per group of ``group`` entries of a row (N:M).
    """
    from scipy.special import ndtri

    a = x.to(_F64).abs()
    rows, cols = a.shape
    z = float(ndtri(0.5 + p))
    if group is not None:
        ag, kg = a.reshape(rows, cols // group, group), kept.reshape(rows, cols // group, group)
    elif per_row:
        ag, kg = a.reshape(rows, 1, cols), kept.reshape(rows, 1, cols)
    else:
        ag, kg = a.reshape(1, 1, -1), kept.reshape(1, 1, -1)
    # RMS over the whole row (or tensor) the mask was chosen from, as the paper's RMS(w).
    if per_row or group is not None:
        rms = torch.sqrt((a * a).mean(-1)).reshape(rows, 1, 1)
    else:
        rms = torch.sqrt((a * a).mean()).reshape(1, 1, 1)
    t_p = rms * z
    big = torch.full_like(ag, math.inf)
    t_k = torch.where(kg, ag, big).amin(-1, keepdim=True)  # inf where nothing is kept
    lo, hi = torch.minimum(t_p, t_k), torch.maximum(t_p, t_k)
    mask = (ag < lo) | (ag > hi)
    return mask.reshape(rows, cols)


class TorchSparsify:
    def __init__(self, stage: Sparsify, row_length: int, rbbm_p: float | None, *, numba: bool = True) -> None:
        self.stage = stage
        self.rbbm_p = rbbm_p
        self.numba = numba
        if rbbm_p is not None and stage.pattern is SparsityPattern.BLOCK:
            raise TrainError("RBBM (rbbm_p) is defined for magnitude and N:M sparsity, not block sparsity")
        if rbbm_p is not None and stage.unit > 1:
            # RBBM's thresholds are entry magnitudes; N:MxK ranks blocks by norm.
            raise TrainError(
                f"RBBM (rbbm_p) is defined for N:M of single entries, not of blocks "
                f"({stage.n}:{stage.m}x{stage.unit}); drop rbbm_p for a straight-through gradient"
            )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(masked x, kept mask, backward mask or None for straight-through)."""
        if self.numba and x.device.type == "cpu":
            from gmse_cli.compress import sparsity

            kept = torch.from_numpy(sparsity.mask(self.stage, cpu_array(x)))
        else:
            kept = sparsity_mask_torch(self.stage, x)
        y = torch.where(kept, x, torch.zeros_like(x))
        if self.rbbm_p is None:
            return y, kept, None
        st = self.stage
        if st.pattern is SparsityPattern.NM:
            bw = rbbm_mask(x, kept, self.rbbm_p, group=st.m)
        else:
            bw = rbbm_mask(x, kept, self.rbbm_p, per_row=st.granularity == "row")
        return y, kept, bw


def _top_mask(a: torch.Tensor, keep: int) -> torch.Tensor:
    """Along the last axis: True at the ``keep`` largest values, the lower index first among ties
    (the rule of gmse_cli.compress.sparsity), found by selection rather than sorting."""
    n = a.shape[-1]
    if keep <= 0:
        return torch.zeros_like(a, dtype=torch.bool)
    if keep >= n:
        return torch.ones_like(a, dtype=torch.bool)
    t = torch.kthvalue(a, n - keep + 1, dim=-1, keepdim=True).values  # the keep-th largest
    above = a > t
    tied = a == t
    room = keep - above.sum(-1, keepdim=True)
    return above | (tied & (torch.cumsum(tied.to(torch.int32), dim=-1) <= room))


def _block_norms(x: torch.Tensor, block: int) -> torch.Tensor:
    """(rows, n // block) float64 sums of squares of blocks of ``block`` consecutive entries.

    The numpy twin sums left to right; a different order changes the last bit only, which
    decides nothing unless two blocks tie to 1e-16 (for blocks of 2, one addition: the same).
    """
    rows, n = x.shape
    return (x.to(_F64) ** 2).reshape(rows, n // block, block).sum(-1)


def sparsity_mask_torch(stage: Sparsify, x: torch.Tensor) -> torch.Tensor:
    """The keep mask of a sparsify stage; equal to gmse_cli.compress.sparsity.mask."""
    from gmse_cli.compress.sparsity import round_count

    rows, n = x.shape
    a = x.to(torch.float32).abs()
    if stage.pattern is SparsityPattern.NM:
        assert stage.n is not None and stage.m is not None
        k = stage.unit
        if k > 1:  # N:MxK: rank blocks of k by L2 norm (float64, as _block_norms below)
            a = _block_norms(x, k)
        kept = _top_mask(a.reshape(rows, n // (stage.m * k), stage.m), stage.n)
        return kept.reshape(rows, n // k).repeat_interleave(k, dim=1)
    if stage.pattern is SparsityPattern.MAGNITUDE:
        if stage.granularity == "tensor":
            return _top_mask(a.reshape(-1), round_count(stage.density, a.numel())).reshape(rows, n)
        return _top_mask(a, round_count(stage.density, n))
    assert stage.block is not None
    norms = _block_norms(x, stage.block)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        keep = norms.numel() - round_count(stage.sparsity, norms.numel())
        kept = _top_mask(norms.reshape(-1), keep).reshape(norms.shape)
    else:
        kept = _top_mask(norms, blocks - round_count(stage.sparsity, blocks))
    return kept.repeat_interleave(stage.block, dim=1)
