"""Differentiable compressors: torch twins of :mod:`gmse_cli.compress` with training gradients.

Forward: :func:`compress_torch` returns the same tensor as ``gmse_cli.compress.compress`` (its
numba path) on the same float32 input, on any device; it is also the GMSE engine's
``--backend torch``. Two code paths, tested against each other and against the numpy twins:

- ``kernels="torch"`` (every device; what a GPU runs): the numpy kernels' float64 arithmetic
  repeated in torch float64, the Hadamard butterflies in float32 in the numba kernel's order,
  exact nearest-codeword search in float64. Equal bit for bit except where a value sits exactly
  on a rounding boundary and two sums of squares differ in their last float64 bit.
- ``kernels="auto"`` (default): CPU tensors go through gmse_cli.compress's own numba kernels
  (the same bits by construction) plus small kernels for the masks (:mod:`._cpu_kernels`).

Backward (the estimator), stage by stage, composed by autograd in stage order:

- rotations: exact (the transform is linear and orthonormal: dL/dx = H^T dL/dy).
- sparsify: the forward keeps the mask M_fw (magnitude or N:M, recomputed on every call, i.e.
  every step); the gradient is straight-through (dL/dx = dL/dy, so pruned weights keep
  learning and can come back), or with RBBM (``rbbm_p = p``) masked by
  M_bw = (|x| < min(T_p, T_k)) | (|x| > max(T_p, T_k)), T_p = RMS(x) * Phi^-1(0.5 + p) and
  T_k the smallest kept magnitude (per row, or per tensor for tensor granularity; per M-group
  for N:M) -- paper.md section 3.
- scalar quantize: straight-through with QuEST's trust mask. A value's gradient passes if it
  lies inside the grid's range widened by half the outermost gap on each side, in scaled units:
  lo - g_lo/2 <= x/s <= hi + g_hi/2. For QuEST's midrise grid (levels +-1, gap 2/(2^b - 1),
  s = a_b RMS) this is exactly |q(x) - x| <= RMS a_b/(2^b - 1), half a step; inside the range
  the nearest level is always within half the local gap, so only clipped outliers are cut.
  The same rule for fp (top binade step), lut, Lloyd-Max, signed and asymmetric grids (shifted
  by the zero point); all-zero groups pass their (zero) gradient.
- vq: straight-through, masked where ||v||^2 > R^2 for the scaled d-dimensional slice v, with
  R = the largest codeword norm + half the distance from that codeword to its nearest
  neighbour (in one dimension: the outermost level + half the outermost gap, the scalar rule).

With ``trust=False`` every lossy stage is plainly straight-through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from gmse_cli.errors import TrainError
from gmse_cli.spec import VQ, Format, Quantize, Rotate, Sparsify, SparsityPattern
from gmse_cli.training.config import EstimatorConfig

__all__ = [
    "compress_torch",
    "TorchCompressor",
    "trust_mask",
    "rbbm_mask",
    "hadamard_torch",
]

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# The straight-through function
# --------------------------------------------------------------------------------------------


class _MaskedSTE(torch.autograd.Function):
    """Forward: the compressed value; backward: grad * mask (or grad itself if mask is None)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]):
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


def _cpu_array(x: torch.Tensor) -> np.ndarray:
    """``x``'s values as a C-contiguous numpy array for the numba kernels. A leaf that requires
    grad (a parameter) is copied first: torch marks a storage that numpy views as not
    resizable, and FSDP frees its unsharded parameters by resizing their storage."""
    t = x.detach()
    if x.is_leaf and x.requires_grad:
        t = t.clone()
    return t.contiguous().numpy()


def _apply(x: torch.Tensor, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaskedSTE.apply(x, fn)
    with torch.no_grad():
        return fn(x)[0]


# --------------------------------------------------------------------------------------------
# Floating-point rounding (the torch twin of grids._fp_round_reference)
# --------------------------------------------------------------------------------------------


def _fp_round(v: torch.Tensor, emin: int, mantissa_bits: int, max_value: float) -> torch.Tensor:
    """Round float64 ``v`` onto an ExMy grid: nearest, ties to even, saturating (exact ops)."""
    _, ex = torch.frexp(v.abs())
    step = torch.ldexp(torch.ones_like(v), torch.clamp(ex - 1, min=emin) - mantissa_bits)
    r = torch.round(v / step) * step  # torch.round: half to even, like np.rint
    return torch.where(r.abs() > max_value, torch.copysign(torch.full_like(v, max_value), v), r)


# --------------------------------------------------------------------------------------------
# Scalar quantization
# --------------------------------------------------------------------------------------------


class _Scalar:
    """One Quantize stage; the plan (grid codes, levels, constants) is the numpy kernel's own."""

    def __init__(self, stage: Quantize, row_length: int, *, numba: bool = True) -> None:
        from gmse_cli.compress import scalar as sc

        self.sc = sc
        self.numba = numba
        self.stage = stage
        self.p = sc.plan(stage, row_length)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.trust_lo, self.trust_hi = _trust_range(stage, self.p)

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            self._tables[device] = (
                torch.as_tensor(self.p.table, dtype=_F64, device=device),
                torch.as_tensor(self.p.mids, dtype=_F64, device=device),
            )
        return self._tables[device]

    # -- the grid ------------------------------------------------------------------------------

    def levels(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        n = p.n
        if p.grid == sc._MIDRISE:
            h = v * (0.5 * (n - 1))
            j = torch.clamp(torch.floor(h.abs()), max=n // 2 - 1.0)
            return torch.copysign((2.0 * j + 1.0) / (n - 1), h)
        if p.grid == sc._SIGNED:
            return torch.clamp(torch.round(v), 1.0 - n // 2, n // 2 - 1.0)
        if p.grid == sc._ASYM:
            return torch.clamp(torch.round(v) + z, 0, n - 1) - z
        if p.grid == sc._FP:
            return _fp_round(v, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value)
        table, mids = self.tables(v.device)
        return table[torch.searchsorted(mids, v.contiguous(), right=True)]

    def dequantize(self, xg: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        pos = scale > 0
        safe = torch.where(pos, scale, torch.ones_like(scale))
        return torch.where(pos, self.levels(xg / safe, z) * scale, 0.0)

    # -- scales ----------------------------------------------------------------------------------

    def _e8m0(self, raw: torch.Tensor, amax: torch.Tensor, mse_rule: bool) -> torch.Tensor:
        p, sc = self.p, self.sc
        m, e = torch.frexp(raw)
        if p.rule == sc._ABSMAX and not mse_rule and p.grid != sc._ASYM:
            k = torch.frexp(amax)[1] - 1 - p.emax
        elif p.rule == sc._ABSMAX and not mse_rule:
            k = torch.where(m == 0.5, e - 1, e)
        else:
            k = torch.where(m >= sc._SQRT_HALF, e, e - 1)
        k = torch.clamp(k, -sc._E8M0_EXP, sc._E8M0_EXP)
        return torch.where(raw > 0, torch.ldexp(torch.ones_like(raw), k), torch.zeros_like(raw))

    def store_local(self, raw: torch.Tensor, amax: torch.Tensor, mse_rule: bool = False) -> torch.Tensor:
        p, sc = self.p, self.sc
        if p.sfmt == sc._BF16:
            return _fp_round(raw, *sc._BF16_P)
        if p.sfmt == sc._FP16:
            return _fp_round(raw, *sc._FP16_P)
        if p.sfmt == sc._E8M0:
            return self._e8m0(raw, amax, mse_rule)
        return raw.to(torch.float32).to(_F64)

    def store_global(self, raw: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        top = float(raw.max()) if raw.numel() else 0.0
        if p.sfmt == sc._E4M3:
            s_t = float(np.float32(top / sc._E4M3_MAX))
            if s_t == 0:
                return torch.zeros_like(raw)
            return _fp_round(raw / s_t, *sc._E4M3_P) * s_t
        s_t = float(np.float32(top / sc._INT8_MAX))
        if s_t == 0:
            return torch.zeros_like(raw)
        return torch.where(raw > 0, torch.clamp(torch.round(raw / s_t), 1.0, sc._INT8_MAX) * s_t,
                           torch.zeros_like(raw))

    def zero_point(self, lo: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if self.p.grid != self.sc._ASYM:
            return torch.zeros_like(scale)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(-lo / safe), 0, self.p.n - 1)

    # -- mse rule --------------------------------------------------------------------------------

    def _group_error(self, xg, kg, scale, z) -> torch.Tensor:
        deq = self.dequantize(xg, scale[..., None], z[..., None])
        err = torch.where(kg, (deq - xg) ** 2, torch.zeros_like(xg)).sum(-1)
        return err.sum(0, keepdim=True) if self.p.tensor else err

    def _candidate(self, ratio, stats):
        p, sc = self.p, self.sc
        base = (stats["hi"] - stats["lo"]) / (p.n - 1) if p.grid == sc._ASYM else stats["amax"] / p.gmax
        if p.sfmt in sc._GLOBAL_FORMATS:  # two-level formats: measured with the float32 raw scale
            scale = (ratio * base).to(torch.float32).to(_F64)
        else:
            scale = self.store_local(ratio * base, stats["amax"], mse_rule=True)
        return scale, self.zero_point(ratio * stats["lo"], scale)

    def mse_ratio(self, xg, kg, stats) -> torch.Tensor:
        sc = self.sc
        shape = stats["amax"].shape
        best_r = torch.full(shape, math.nan, dtype=_F64, device=xg.device)
        best_err = torch.full(shape, math.inf, dtype=_F64, device=xg.device)
        for k in range(sc._MSE_COARSE):
            r = torch.full(shape, 1.0 - sc._MSE_COARSE_STEP * k, dtype=_F64, device=xg.device)
            err = self._group_error(xg, kg, *self._candidate(r, stats))
            better = err < best_err
            best_r, best_err = torch.where(better, r, best_r), torch.where(better, err, best_err)
        coarse = best_r
        for j in range(-sc._MSE_FINE, sc._MSE_FINE + 1):
            if j == 0:
                continue
            r = coarse + sc._MSE_FINE_STEP * j
            err = self._group_error(xg, kg, *self._candidate(r, stats))
            better = (err < best_err) & (r >= sc._MSE_MIN_RATIO) & (r <= 1.0)
            best_r, best_err = torch.where(better, r, best_r), torch.where(better, err, best_err)
        return best_r

    # -- the stage -------------------------------------------------------------------------------

    @property
    def fast_cpu(self) -> bool:
        """CPU tensors take the numba compressor plus a cheap mask (not the mse rule, whose
        clipping ratio the mask would have to search again)."""
        return self.p.rule != self.sc._MSE

    def __call__(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dequantized float32 x, trust mask or None) for float32 x of shape (rows, cols)."""
        if self.numba and x.device.type == "cpu" and self.fast_cpu:
            return self.call_numba(x, kept, trust)
        return self.call_torch(x, kept, trust)

    def call_numba(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward by gmse_cli.compress.scalar.quantize itself (fused numba, the same bits);
        the trust mask from group scales recomputed by the kernels of ._cpu_kernels."""
        xa = _cpu_array(x)
        keep = kept.contiguous().numpy() if kept is not None else None
        out = torch.from_numpy(self.sc.quantize(self.stage, xa, keep))
        return out, (self.trust_from_scales(torch.from_numpy(xa), kept) if trust else None)

    def trust_from_scales(self, x: torch.Tensor, kept: torch.Tensor | None, *, use_numba: bool = True) -> torch.Tensor:
        """The trust mask for the rms, absmax and none rules: group statistics, the stored scale
        (as the scale format stores it), then the band check. ``use_numba=False`` is the plain
        torch twin of the CPU kernels."""
        from gmse_cli.training import _cpu_kernels as kern

        p, sc = self.p, self.sc
        rows, cols = x.shape
        if p.rule == sc._NONE:
            return (x >= self.trust_lo) & (x <= self.trust_hi)
        group = rows * cols if p.tensor else p.group
        flat = x.reshape(1, rows * cols) if p.tensor else x  # one group = the whole tensor
        keep = None if kept is None else kept.reshape(flat.shape)

        def stat(kind: int) -> torch.Tensor:  # (rows, groups) float64
            if use_numba:
                k = None if keep is None else keep.contiguous().numpy()
                return torch.from_numpy(kern.group_stat(flat.contiguous().numpy(), k, group, kind))
            xg = flat.to(_F64).reshape(flat.shape[0], -1, group)
            kg = torch.ones_like(xg, dtype=torch.bool) if keep is None else keep.reshape(xg.shape)
            zero = torch.zeros((), dtype=_F64)
            if kind == kern.STAT_RMS:
                count = kg.sum(-1).clamp(min=1)
                return torch.sqrt(torch.where(kg, xg * xg, zero).sum(-1) / count)
            if kind == kern.STAT_AMAX:
                return torch.where(kg, xg.abs(), zero).amax(-1)
            if kind == kern.STAT_LO:
                return torch.where(kg, xg, zero).amin(-1).clamp(max=0.0)
            return torch.where(kg, xg, zero).amax(-1).clamp(min=0.0)

        lo = None
        if p.rule == sc._RMS:
            raw = p.constant * stat(kern.STAT_RMS)
            amax = raw  # only the absmax e8m0 rule reads amax
        elif p.grid == sc._ASYM:
            lo, hi = stat(kern.STAT_LO), stat(kern.STAT_HI)
            amax = torch.maximum(-lo, hi)
            raw = (hi - lo) / (p.n - 1)
        else:
            amax = stat(kern.STAT_AMAX)
            raw = amax / p.gmax
        scale = self.store_global(raw) if p.sfmt in sc._GLOBAL_FORMATS else self.store_local(raw, amax)
        z = self.zero_point(lo, scale) if lo is not None else torch.zeros_like(scale)
        lo_e, hi_e = self.band(scale, z)
        if use_numba:
            return torch.from_numpy(kern.band_mask(flat.contiguous().numpy(), group, lo_e.numpy(), hi_e.numpy())).reshape(rows, cols)
        xg = flat.reshape(flat.shape[0], -1, group)
        lo32, hi32 = lo_e.to(torch.float32)[..., None], hi_e.to(torch.float32)[..., None]
        return ((xg >= lo32) & (xg <= hi32)).reshape(rows, cols)

    def band(self, scale: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per group, the trusted interval in the input's units (float64): the grid's range in
        scaled units, shifted by -z for asymmetric grids, times the scale; everything for a
        zero scale (the group is all zeros)."""
        pos = scale > 0
        lo = torch.where(pos, (self.trust_lo - z) * scale, torch.full_like(scale, -math.inf))
        hi = torch.where(pos, (self.trust_hi - z) * scale, torch.full_like(scale, math.inf))
        return lo, hi

    def _stats(self, xg: torch.Tensor, kg: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per group (float64, over kept entries): only the statistics the scale rule reads --
        count and sum of squares (rms), amax (absmax), lo and hi (asymmetric), all (mse) -- as
        this runs on every forward pass; without a mask the masking is skipped (same values)."""
        p, sc = self.p, self.sc
        need = {"count", "ss"} if p.rule == sc._RMS else {"lo", "hi"} if p.grid == sc._ASYM else {"amax"}
        if p.rule == sc._MSE:
            need = {"count", "ss", "amax", "lo", "hi"}
        if kg is None:
            stats = {
                "count": lambda: torch.full(xg.shape[:-1], float(xg.shape[-1]), dtype=_F64, device=xg.device),
                "ss": lambda: (xg * xg).sum(-1),
                "amax": lambda: xg.abs().amax(-1),
                "lo": lambda: torch.clamp(xg.amin(-1), max=0.0),
                "hi": lambda: torch.clamp(xg.amax(-1), min=0.0),
            }
        else:
            stats = {
                "count": lambda: kg.sum(-1).to(_F64),
                "ss": lambda: torch.where(kg, xg * xg, 0.0).sum(-1),
                "amax": lambda: torch.where(kg, xg.abs(), 0.0).amax(-1),
                "lo": lambda: torch.clamp(torch.where(kg, xg, math.inf).amin(-1), max=0.0),
                "hi": lambda: torch.clamp(torch.where(kg, xg, -math.inf).amax(-1), min=0.0),
            }
        out = {name: stats[name]() for name in need}
        if p.tensor:  # one group: reduce the per-row statistics over rows
            reduce = {"count": torch.sum, "ss": torch.sum, "amax": torch.amax, "lo": torch.amin, "hi": torch.amax}
            out = {name: reduce[name](v, 0, keepdim=True) for name, v in out.items()}
        return out

    def call_torch(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float64 torch twin (any device)."""
        p, sc = self.p, self.sc
        rows, cols = x.shape
        x64 = x.to(_F64)
        if p.rule == sc._NONE:
            out = _fp_round(x64, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value)
            if kept is not None:
                out = torch.where(kept, out, 0.0)
            mask = ((x64 >= self.trust_lo) & (x64 <= self.trust_hi)) if trust else None
            return out.to(torch.float32), mask
        group = cols if p.tensor else p.group
        xg = x64.reshape(rows, cols // group, group)  # (rows, groups per row, group)
        kg = None if kept is None else kept.reshape(xg.shape)
        stats = self._stats(xg, kg)
        if p.rule == sc._MSE and kg is None:
            kg = torch.ones_like(xg, dtype=torch.bool)
        ratio = self.mse_ratio(xg, kg, stats) if p.rule == sc._MSE else 1.0
        if p.rule == sc._RMS:
            raw = p.constant * torch.sqrt(stats["ss"] / torch.clamp(stats["count"], min=1.0))
        elif p.grid == sc._ASYM:
            raw = ratio * ((stats["hi"] - stats["lo"]) / (p.n - 1))
        else:
            raw = ratio * (stats["amax"] / p.gmax)
        if p.sfmt in sc._GLOBAL_FORMATS:
            scale = self.store_global(raw)
        else:  # amax: read only by the symmetric absmax e8m0 rule, which has it
            scale = self.store_local(raw, stats.get("amax", raw), mse_rule=p.rule == sc._MSE)
        z = self.zero_point(ratio * stats["lo"], scale) if "lo" in stats else torch.zeros_like(scale)
        out = self.dequantize(xg, scale[..., None], z[..., None])
        if kg is not None:
            out = torch.where(kg, out, 0.0)
        mask = None
        if trust:
            lo_e, hi_e = self.band(scale, z)
            xg32 = x.reshape(xg.shape)  # compared as the CPU kernel compares: float32 x, float32 edges
            mask = (xg32 >= lo_e.to(torch.float32)[..., None]) & (xg32 <= hi_e.to(torch.float32)[..., None])
            mask = mask.reshape(rows, cols)
        return out.to(torch.float32).reshape(rows, cols), mask


def _trust_range(stage: Quantize, plan) -> tuple[float, float]:
    """[lowest level - half its gap, highest level + half its gap] in native (scaled) units."""
    from gmse_cli.compress import scalar as sc

    if plan.grid == sc._FP:
        # Top binade step of ExMy: 2^(floor(log2 max) - M); the grid is symmetric.
        top = math.frexp(plan.fp.max_value)[1] - 1
        reach = plan.fp.max_value + 0.5 * 2.0 ** (top - plan.fp.mantissa_bits)
        return -reach, reach
    if plan.grid == sc._ASYM:
        return -0.5, plan.n - 1 + 0.5  # shifted by -z per group
    if plan.grid == sc._MIDRISE:
        reach = 1.0 + 1.0 / (plan.n - 1)
        return -reach, reach
    if plan.grid == sc._SIGNED:
        reach = plan.n // 2 - 1 + 0.5
        return -reach, reach
    t = plan.table
    return float(t[0] - 0.5 * (t[1] - t[0])), float(t[-1] + 0.5 * (t[-1] - t[-2]))


def trust_mask(stage: Quantize, x: torch.Tensor) -> torch.Tensor:
    """QuEST's trust mask of ``x`` (rows, cols) under one scalar stage (True = gradient passes)."""
    fn = _Scalar(stage, x.shape[1])
    return fn(x.to(torch.float32), None, True)[1]


# --------------------------------------------------------------------------------------------
# Sparsity
# --------------------------------------------------------------------------------------------


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


class _Sparse:
    def __init__(self, stage: Sparsify, row_length: int, rbbm_p: float | None, *, numba: bool = True) -> None:
        self.stage = stage
        self.rbbm_p = rbbm_p
        self.numba = numba
        if rbbm_p is not None and stage.pattern is SparsityPattern.BLOCK:
            raise TrainError("RBBM (rbbm_p) is defined for magnitude and N:M sparsity, not block sparsity")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(masked x, kept mask, backward mask or None for straight-through)."""
        if self.numba and x.device.type == "cpu":
            from gmse_cli.compress import sparsity

            kept = torch.from_numpy(sparsity.mask(self.stage, _cpu_array(x)))
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


def sparsity_mask_torch(stage: Sparsify, x: torch.Tensor) -> torch.Tensor:
    """The keep mask of a sparsify stage; equal to gmse_cli.compress.sparsity.mask."""
    from gmse_cli.compress.sparsity import _round_count

    rows, n = x.shape
    a = x.to(torch.float32).abs()
    if stage.pattern is SparsityPattern.NM:
        assert stage.n is not None and stage.m is not None
        return _top_mask(a.reshape(rows, n // stage.m, stage.m), stage.n).reshape(rows, n)
    if stage.pattern is SparsityPattern.MAGNITUDE:
        if stage.granularity == "tensor":
            return _top_mask(a.reshape(-1), _round_count(stage.density, a.numel())).reshape(rows, n)
        return _top_mask(a, _round_count(stage.density, n))
    assert stage.block is not None
    # Block norms in float64 (the numpy twin sums left to right; a different order changes the
    # last bit only, which decides nothing unless two blocks tie to 1e-16).
    norms = (x.to(_F64) ** 2).reshape(rows, n // stage.block, stage.block).sum(-1)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        keep = norms.numel() - _round_count(stage.sparsity, norms.numel())
        kept = _top_mask(norms.reshape(-1), keep).reshape(norms.shape)
    else:
        kept = _top_mask(norms, blocks - _round_count(stage.sparsity, blocks))
    return kept.repeat_interleave(stage.block, dim=1)


# --------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Vector quantization
# --------------------------------------------------------------------------------------------


def vq_trust_radius(codewords: np.ndarray) -> float:
    """R = the largest codeword norm + half the distance from that codeword to its nearest
    neighbour (in one dimension: the outermost level plus half the outermost gap)."""
    c = codewords.astype(np.float64)
    norms = np.sqrt((c * c).sum(1))
    top = int(np.argmax(norms))
    gaps = np.sqrt(((c - c[top]) ** 2).sum(1))
    gaps[top] = np.inf
    return float(norms[top] + 0.5 * gaps.min())


class _VQ:
    """One VQ stage: codebook, scale constant and search of gmse_cli.compress.vq."""

    def __init__(self, stage: VQ, row_length: int, *, numba: bool = True) -> None:
        from gmse_cli.compress import vq

        self.vq = vq
        self.numba = numba
        self.stage = stage
        cb, info = vq.codebook_and_info(stage)
        self.codewords = np.array(cb, dtype=np.float32)  # a writable copy for torch
        self.constant = float(info.scale_constant)
        self.group = row_length if stage.group == "row" else int(stage.group)
        self.radius = vq_trust_radius(self.codewords)
        self._device_cb: dict[torch.device, torch.Tensor] = {}

    def cb(self, device: torch.device) -> torch.Tensor:
        if device not in self._device_cb:
            self._device_cb[device] = torch.as_tensor(self.codewords, device=device)
        return self._device_cb[device]

    def scales(self, x: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """Effective float32 scales (rows, groups): constant * RMS over kept entries, stored as
        the scale format stores it (vq's rules: the float32 raw scale is what gets cast)."""
        from gmse_cli.compress import scalar as sc

        rows, cols = x.shape
        xg = x.to(_F64).reshape(rows, cols // self.group, self.group)
        kg = torch.ones_like(xg, dtype=torch.bool) if kept is None else kept.reshape(xg.shape)
        zero = torch.zeros((), dtype=_F64, device=x.device)
        ss = torch.where(kg, xg * xg, zero).sum(-1)
        raw = self.constant * torch.sqrt(ss / kg.sum(-1).clamp(min=1).to(_F64))
        raw32 = raw.to(torch.float32)
        fmt = self.stage.scale_format.value
        if fmt == "fp32":
            return raw32
        if fmt == "bf16":
            return _fp_round(raw32.to(_F64), *sc._BF16_P).to(torch.float32)
        if fmt == "fp16":
            return _fp_round(raw32.to(_F64), *sc._FP16_P).to(torch.float32)
        if fmt == "e8m0":
            m, e = torch.frexp(raw)
            k = torch.clamp(torch.where(m >= math.sqrt(0.5), e, e - 1), -127, 127)
            return torch.where(raw > 0, torch.ldexp(torch.ones_like(raw), k), zero).to(torch.float32)
        top = float(raw.max()) if raw.numel() else 0.0
        if fmt == "e4m3":
            s_t = float(np.float32(top / 448.0))
            if s_t == 0:
                return torch.zeros_like(raw32)
            stored = _fp_round((raw / s_t).to(torch.float32).to(_F64), *sc._E4M3_P)
            return (stored * s_t).to(torch.float32)
        s_t = float(np.float32(top / 255.0))
        if s_t == 0:
            return torch.zeros_like(raw32)
        return torch.where(raw > 0, torch.clamp(torch.round(raw / s_t), 1.0, 255.0) * s_t, zero).to(torch.float32)

    def nearest(self, q: torch.Tensor, *, chunk_elements: int = 1 << 22) -> torch.Tensor:
        """Index of the nearest codeword to each row of float32 ``q`` (n, d): float64 squared
        distances summed over coordinates in order, lowest index on ties (vq's brute force)."""
        c = self.cb(q.device).to(_F64)
        out = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
        step = max(1, chunk_elements // c.shape[0])
        for start in range(0, q.shape[0], step):
            qc = q[start : start + step].to(_F64)
            dist = torch.zeros((qc.shape[0], c.shape[0]), dtype=_F64, device=q.device)
            for i in range(c.shape[1]):
                dist += (qc[:, i, None] - c[None, :, i]) ** 2
            out[start : start + step] = torch.argmin(dist, dim=1)  # first minimum on ties
        return out

    def __call__(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, cols = x.shape
        d = self.stage.dim
        scales = self.scales(x, kept)  # (rows, groups) float32
        per_entry = scales.repeat_interleave(self.group, dim=1)  # (rows, cols)
        zero_scale = per_entry == 0
        q = x / torch.where(zero_scale, torch.ones_like(per_entry), per_entry)  # float32, as vq divides
        if self.numba and x.device.type == "cpu":
            keep = kept.contiguous().numpy() if kept is not None else None
            out = torch.from_numpy(self.vq.quantize(self.stage, _cpu_array(x), keep))
        else:
            idx = self.nearest(q.reshape(-1, d))
            out = (per_entry.reshape(-1, d) * self.cb(x.device)[idx]).reshape(rows, cols)
            out = torch.where(zero_scale, torch.zeros_like(out), out)
            if kept is not None:
                out = torch.where(kept, out, torch.zeros_like(out))
        mask = None
        if trust:
            norm2 = (q.to(_F64).reshape(rows, cols // d, d) ** 2).sum(-1)  # (rows, slices)
            inside = (norm2 <= self.radius**2).repeat_interleave(d, dim=1)
            mask = inside | zero_scale
        return out, mask


# --------------------------------------------------------------------------------------------
# The compressor
# --------------------------------------------------------------------------------------------


class TorchCompressor:
    """A format as a differentiable torch function on (rows, row_length) tensors."""

    def __init__(self, fmt: Format, estimator: EstimatorConfig | None = None, *,
                 kernels: Literal["auto", "torch"] = "auto") -> None:
        """``kernels="auto"``: CPU tensors go through gmse_cli.compress's numba kernels (the
        same bits, several times faster); ``"torch"``: torch ops on every device."""
        self.fmt = fmt
        self.estimator = estimator or EstimatorConfig()
        self.kernels = kernels
        self._stages: dict[int, list] = {}

    def _built(self, row_length: int) -> list:
        if row_length not in self._stages:
            self.fmt.check_row_length(row_length)
            built = []
            for stage in self.fmt.stages:
                if isinstance(stage, Quantize):
                    built.append(_Scalar(stage, row_length, numba=self.kernels == "auto"))
                elif isinstance(stage, Sparsify):
                    built.append(_Sparse(stage, row_length, self.estimator.rbbm_p, numba=self.kernels == "auto"))
                elif isinstance(stage, VQ):
                    built.append(_VQ(stage, row_length, numba=self.kernels == "auto"))
                else:
                    built.append(stage)
            self._stages[row_length] = built
        return self._stages[row_length]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"compress_torch expects a 2-D (rows, row_length) tensor, got {tuple(x.shape)}")
        dtype = x.dtype
        y = x.to(torch.float32)
        stages = self._built(y.shape[1])
        rotations = [s for s in stages if isinstance(s, Rotate)]
        trust = self.estimator.trust
        for rot in rotations:
            y = hadamard_torch(y, rot)
        kept: torch.Tensor | None = None
        for stage in stages:
            if isinstance(stage, _Sparse):
                box: dict[str, torch.Tensor] = {}

                def sparse_fn(t: torch.Tensor, stage=stage, box=box):
                    out, keep, bw = stage(t)
                    box["kept"] = keep
                    return out, bw

                y = _apply(y, sparse_fn)
                kept = box["kept"]
            elif isinstance(stage, _Scalar | _VQ):

                def quant_fn(t: torch.Tensor, stage=stage, kept=kept):
                    return stage(t, kept, trust)

                y = _apply(y, quant_fn)
        for rot in reversed(rotations):
            y = hadamard_torch(y, rot, inverse=True)
        return y.to(dtype)


@lru_cache(maxsize=256)
def _cached(fmt: Format) -> TorchCompressor:
    return TorchCompressor(fmt)


def compress_torch(fmt: Format, x: torch.Tensor) -> torch.Tensor:
    """Compress ``x`` (rows, row_length) with ``fmt`` on x's device; same values as
    ``gmse_cli.compress.compress``. Differentiable (module docstring) when x requires grad."""
    return _cached(fmt)(x)
