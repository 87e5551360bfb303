"""The entry points: :func:`quantize` (fused numba kernels, parallel over rows), its numpy
twin :func:`quantize_reference`, and :func:`top_raw_scale` for two-level scales quantized a
chunk of rows at a time."""

from __future__ import annotations

import functools
import math

import numpy as np

from gmse_cli.compress.checks import check_input
from gmse_cli.compress.fpcast import fp_cast
from gmse_cli.compress.grids import fp_round_reference
from gmse_cli.compress.scalar.double_quant import dq_scales, dq_scales_reference
from gmse_cli.compress.scalar.mse_rule import mse_ratio_for, mse_ratio_reference, tensor_mse_ratio
from gmse_cli.compress.scalar.plans import (
    ASYM,
    DQ8,
    FP32,
    GLOBAL_FORMATS,
    MSE,
    NONE,
    TENSOR_FORMATS,
    Plan,
    grid_args,
    plan,
    scale_args,
)
from gmse_cli.compress.scalar.rounding import (
    dequantize_reference,
    k_mask_row,
    write_groups_kernel,
    write_row_for,
)
from gmse_cli.compress.scalar.scales import (
    group_stats_reference,
    k_raw,
    k_raws,
    k_stats,
    k_store_global,
    k_store_local,
    k_top,
    k_zero_point,
    k_zero_points,
    raw_reference,
    store_global_reference,
    store_local_reference,
    zero_point_reference,
)
from gmse_cli.errors import DataError, SpecError
from gmse_cli.kernel_cache import numba, variant
from gmse_cli.spec import Quantize, ScaleStats


def _validate(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    return check_input(stage, Quantize, "quantize", x, mask)


def _over_all(stage: Quantize, mask: np.ndarray | None) -> bool:
    """Whether the statistics cover every entry although a mask drops some (scale_stats 'all')."""
    return mask is not None and stage.scale_stats is ScaleStats.ALL


def _zero_dropped(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    np.copyto(out, np.float32(0.0), where=~mask)
    return out


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def quantize_reference(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, top_raw_scale: float | None = None
) -> np.ndarray:
    """Plain vectorized numpy twin of :func:`quantize` (same results, bit for bit)."""
    x, mask = _validate(stage, x, mask)
    if _over_all(stage, mask):
        assert mask is not None
        return _zero_dropped(quantize_reference(stage, x, None, top_raw_scale=top_raw_scale), mask)
    rows, cols = x.shape
    if x.size == 0:
        return x.copy()
    p = plan(stage, cols)
    _check_top(p, top_raw_scale)
    kept = np.ones(x.shape, dtype=bool) if mask is None else mask
    if p.rule == NONE:
        cast = fp_round_reference(x.astype(np.float64), p.fp, p.over)
        return np.where(kept, cast, 0.0).astype(np.float32)
    xg, kg, stats, ratio, raw = _raw_scales_reference(p, x, kept)
    deq = None
    if p.sfmt == DQ8:  # rounded with the fp32 scale, dequantized with the double-quantized one
        scale = store_local_reference(p, raw, stats["amax"])
        deq = dq_scales_reference(raw)[..., None]
    elif p.sfmt in GLOBAL_FORMATS:
        scale = store_global_reference(p, raw, top_raw_scale)
    else:
        scale = store_local_reference(p, raw, stats["amax"])
    z = zero_point_reference(p, ratio * stats["lo"], scale)
    with np.errstate(invalid="ignore", over="ignore"):  # overflow 'inf' scales: inf/NaN out
        out = dequantize_reference(p, xg, scale[..., None], z[..., None], deq)
    return np.where(kg, out, 0.0).astype(np.float32).reshape(rows, cols)


def _raw_scales_reference(
    p: Plan, x: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(groups of x in float64, their kept masks, statistics, mse ratio, raw scale)."""
    rows, cols = x.shape
    x64 = x.astype(np.float64)
    xg = x64.reshape(rows, cols // p.group, p.group)  # (rows, groups per row, group)
    kg = kept.reshape(xg.shape)
    stats = group_stats_reference(p, xg, kg)
    if p.rule == MSE:
        ratio = mse_ratio_reference(p, xg, kg, stats)
    else:
        ratio = np.ones_like(stats["amax"])
    return xg, kg, stats, ratio, raw_reference(p, stats, ratio)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@functools.cache
def groups_kernel(grid: int, search: bool, fused: bool):
    """The group pass for grid code ``grid``: one parallel kernel per (grid, whether the mse
    rule searches, fused), each cached on disk, so that a format compiles only its own grid's
    loops, and the mse search only if it searches (compiling every grid and the search into
    one kernel cost every first run 14 s of CPU)."""

    @numba.njit(cache=True, parallel=True)
    @variant(grid, search, fused)
    def k_groups(x, mask, has_mask, out, g, rule, constant, st, st_measure, gmax, gr, stats, ratio):
        """Per group: statistics and (``search``) the mse clipping ratio; if ``fused``, also the
        stored scales, and the row is rounded right after, while it is still in cache
        (per-group formats).

        Otherwise (tensor-wide formats, tensor groups) the statistics (count, moment (the sum of
        squares for rms, of magnitudes for absmean), amax, lo, hi) go to ``stats`` (rows, groups, 5) and the ratio to ``ratio`` (tensor
        groups search over the whole tensor instead). ``st``: the scale tuple; ``st_measure``:
        the one mse candidates are measured with (float32 scales for the tensor-wide formats).
        """
        rows, cols = x.shape
        groups = cols // g
        asym, n = grid == ASYM, gr[1]
        for i in numba.prange(rows):
            m_row = k_mask_row(mask, has_mask, i)
            scales, zs = np.empty(groups), np.empty(groups)
            n_sq = g if search else 0  # the mse search's scratch
            sq, idx = np.empty(n_sq), np.empty(n_sq, dtype=np.int64)
            for b in range(groups):
                xs = x[i, b * g : (b + 1) * g]
                ms = m_row[b * g : (b + 1) * g] if has_mask else m_row
                count, ss, amax, lo, hi = k_stats(xs, ms, has_mask, rule)
                r = 1.0
                if search:
                    r = mse_ratio_for(grid, xs, ms, has_mask, amax, lo, hi, st_measure, gr, gmax, sq, idx)
                if fused:
                    s_raw = k_raw(rule, constant, count, ss, amax, lo, hi, r, asym, n, gmax)
                    scales[b] = k_store_local(s_raw, amax, st)
                    zs[b] = k_zero_point(r * lo, scales[b], asym, n)
                else:
                    stats[i, b, 0] = count
                    stats[i, b, 1] = ss
                    stats[i, b, 2] = amax
                    stats[i, b, 3] = lo
                    stats[i, b, 4] = hi
                    ratio[i, b] = r
            if fused:
                write_row_for(grid, x[i], m_row, has_mask, out[i], g, scales, scales, zs, gr)

    return k_groups


# --------------------------------------------------------------------------------------------
# the kernel path
# --------------------------------------------------------------------------------------------


def quantize(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, top_raw_scale: float | None = None
) -> np.ndarray:
    """Quantize-dequantize ``x`` (rows, row_length) with one scalar stage (package docstring).

    Fused numba kernels, parallel over rows; the same results as :func:`quantize_reference`.
    ``top_raw_scale`` (two-level scale formats, e4m3 and int8, only): the largest raw group
    scale of the whole tensor that ``x`` is some rows of (:func:`top_raw_scale` of each chunk,
    maximized), so that the tensor can be quantized a chunk of rows at a time with the
    tensor's second-level scale: the same result as quantizing it whole.

    ``mask`` (True = kept) comes from a preceding sparsify stage; dropped entries output 0.
    Statistics cover the kept entries, or with ``stage.scale_stats`` 'all' every entry of
    ``x``, which must then hold the rows before pruning: QuEST's FourEight order, quantize the
    whole row and zero the dropped entries after.
    """
    x, mask = _validate(stage, x, mask)
    if _over_all(stage, mask):
        assert mask is not None
        return _zero_dropped(quantize(stage, x, None, top_raw_scale=top_raw_scale), mask)
    if x.size == 0:
        return x.copy()
    p = plan(stage, x.shape[1])
    _check_top(p, top_raw_scale)
    if p.rule == NONE:
        out = fp_cast(x, stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style, stage.overflow)
        if mask is not None:
            np.copyto(out, np.float32(0.0), where=~mask)
        return out
    out = np.empty_like(x)
    has_mask = mask is not None
    m = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    gr = grid_args(p)
    g = x.shape[1] if p.tensor else p.group
    fused = not p.tensor and p.sfmt not in TENSOR_FORMATS
    stats, ratio = _group_pass(p, x, m, has_mask, out, fused)
    if fused:
        return out
    if p.tensor:
        scales, zs = _tensor_scale(p, x, m, has_mask, gr, stats[:, 0, :])
        deq = scales
    else:
        raw, lo = _raws(p, stats, ratio)
        if p.sfmt == DQ8:  # rounded with the fp32 scale, dequantized with the double-quantized one
            scales, deq = raw.astype(np.float32).astype(np.float64), dq_scales(raw)
        else:
            top = k_top(raw) if top_raw_scale is None else float(top_raw_scale)
            scales = deq = k_store_global(raw, p.sfmt, top)
        zs = k_zero_points(ratio, lo, scales, p.grid == ASYM, p.n)
    write_groups_kernel(p.grid)(x, m, has_mask, out, g, scales, deq, zs, gr)
    return out


def top_raw_scale(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, reference: bool = False
) -> float:
    """The largest raw group scale of ``x`` for a two-level scale format (e4m3, int8): the
    first pass of quantizing a tensor a chunk of rows at a time (see :func:`quantize`)."""
    x, mask = _validate(stage, x, mask)
    if _over_all(stage, mask):
        mask = None
    p = plan(stage, x.shape[1])
    _check_top(p, 0.0)
    if x.size == 0:
        return 0.0
    if reference:
        raw = _raw_scales_reference(p, x, np.ones(x.shape, dtype=bool) if mask is None else mask)[-1]
        return float(np.max(raw))
    has_mask = mask is not None
    m = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    unused_out = np.empty((1, 1), dtype=np.float32)  # written only by the fused (per-group) path
    return float(k_top(_raws(p, *_group_pass(p, x, m, has_mask, unused_out, False))[0]))


def _check_top(p: Plan, top: float | None) -> None:
    if p.sfmt == DQ8 and top is not None:
        raise SpecError("quantize: dq8 scales need the whole tensor at once (no tensor-wide top raw scale)")
    if top is not None and (p.tensor or p.sfmt not in GLOBAL_FORMATS or p.rule == NONE):
        raise SpecError("quantize: a tensor-wide top raw scale applies only to e4m3 and int8 scales of groups")
    if top is not None and not (math.isfinite(top) and top >= 0):
        raise DataError(f"quantize: top_raw_scale = {top} must be finite and >= 0")


def _group_pass(
    p: Plan, x: np.ndarray, m: np.ndarray, has_mask: bool, out: np.ndarray, fused: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group statistics and mse ratios (and, if ``fused``, the quantized ``out``)."""
    rows, g = x.shape[0], x.shape[1] if p.tensor else p.group
    stats, ratio = np.zeros((rows, x.shape[1] // g, 5)), np.ones((rows, x.shape[1] // g))
    rule = NONE if p.tensor and p.rule == MSE else p.rule
    # Tensor-wide formats measure mse candidates with the float32 raw scale.
    st, st_measure = scale_args(p), scale_args(p, None if fused else FP32)
    groups_kernel(p.grid, rule == MSE, fused)(
        x, m, has_mask, out, g, rule, p.constant, st, st_measure, p.gmax, grid_args(p), stats, ratio
    )
    return stats, ratio


def _raws(p: Plan, stats: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw scale, lo) per group from the group pass."""
    count, ss, amax, lo, hi = np.moveaxis(stats, -1, 0)
    raw = k_raws(p.rule, p.constant, count, ss, amax, lo, hi, ratio, p.grid == ASYM, p.n, p.gmax)
    return raw, lo


def _tensor_scale(
    p: Plan, x: np.ndarray, m: np.ndarray, has_mask: bool, gr: tuple, row_stats: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of the single tensor-wide group, as (rows, 1) arrays."""
    count, amax = float(np.sum(row_stats[:, 0])), float(np.max(row_stats[:, 2]))
    ss = 0.0
    for v in row_stats[:, 1]:  # rows in order, as the reference sums them
        ss += float(v)
    lo, hi = float(np.min(row_stats[:, 3])), float(np.max(row_stats[:, 4]))
    asym = p.grid == ASYM
    r = 1.0
    if p.rule == MSE:
        r = tensor_mse_ratio(p, x, m, has_mask, gr, amax, lo, hi)
    raw = k_raw(p.rule, p.constant, count, ss, amax, lo, hi, r, asym, p.n, p.gmax)
    if p.sfmt in GLOBAL_FORMATS:
        scale = float(k_store_global(np.array([[raw]]), p.sfmt, raw)[0, 0])
    else:
        scale = k_store_local(raw, amax, scale_args(p))
    rows = x.shape[0]
    return np.full((rows, 1), scale), np.full((rows, 1), k_zero_point(r * lo, scale, asym, p.n))
