"""Scalar quantization: scale rules, scale storage formats and rounding onto a grid.

``quantize(stage, x, mask)`` applies one :class:`~gmse_cli.spec.Quantize` stage to a float32
tensor of shape (rows, row_length) and returns the dequantized tensor. Groups are ``g``
consecutive entries of a row, a whole row, or the whole tensor. ``mask`` (True = kept) comes
from a preceding sparsify stage: statistics use only kept entries; dropped entries output 0.

Per group, all in float64 (so the numba kernel and its numpy twin agree bit for bit):

1. statistics over kept entries: count, sum of squares (summed in order), amax, and
   lo = min(0, min x), hi = max(0, max x) (zero is kept inside an asymmetric range, as GPTQ
   does, so the zero point fits in the element bits that :meth:`Quantize.scale_bits` counts);
2. the raw scale, by rule:

   - ``absmax``: amax / grid_max; asymmetric ints (hi - lo) / (2^b - 1);
   - ``rms``: c * RMS, c = ``scale_constant`` or :func:`~.grids.optimal_rms_constant`;
   - ``mse``: r times the absmax scale, r the clipping ratio with the least squared error
     among 1.00, 0.99, ..., 0.20, refined to 0.001 around the best (first best wins);
   - ``none``: no scale, a plain cast onto an fp grid;

3. the stored (effective) scale, by ``scale_format``:

   - fp32: the raw scale rounded to float32; bf16 / fp16: cast (RNE, saturating);
   - e8m0: a power of two 2^k, k in [-127, 127]: OCP MX's k = floor(log2 amax) - emax_elem
     for symmetric absmax; the smallest power of two >= the raw scale for asymmetric absmax
     (nothing clipped); log2 of the raw scale rounded to nearest for rms and mse;
   - e4m3 (NVFP4's two levels): s_t = float32(max raw scale over the tensor / 448), stored =
     e4m3(raw / s_t), effective = stored * s_t;
   - int8: s_t = float32(max raw scale / 255), effective = clip(rint(raw / s_t), 1, 255) * s_t;

   A zero effective scale (all-zero or fully masked group, or underflow) outputs zeros.
   The ``mse`` search measures each candidate with its stored scale for the per-group
   formats (fp32, bf16, fp16, e8m0) and with the float32 raw scale for the two-level ones
   (e4m3, int8), whose stored value depends on every group's choice. The kernel skips the
   candidates that cannot win, which changes no result: a (scale, zero point) met before,
   and an error sum once it reaches the best so far;

4. rounding of v = x / scale, then x_hat = float32(level * scale):

   - fp: RNE onto the ExMy grid, saturating (:func:`~.grids.fp_cast`);
   - int midrise: the nearest of the levels +-(2j + 1) / (2^b - 1), clamped; ties (measure
     zero) away from zero;
   - int signed: clip(rint(v), -(2^(b-1) - 1), 2^(b-1) - 1) (ties to even);
   - int asymmetric: q = clip(rint(v) + z, 0, 2^b - 1), level q - z, with the zero point
     z = clip(rint(-lo / scale), 0, 2^b - 1) (lo scaled by r for ``mse``);
   - lut and lloyd-max: the nearest level; a value exactly at a midpoint takes the upper one.

Inputs are assumed finite (not checked on the hot path). The sign of an output zero is not
part of the contract.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from gmse_cli.compress.checks import check_input
from gmse_cli.compress.grids import (
    FpParams,
    _fp_round_reference,
    _k_fp_round,
    fp_cast,
    fp_params,
    grid_emax,
    grid_levels,
    grid_max,
    optimal_rms_constant,
)
from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import FpStyle, GridKind, IntStyle, Quantize, ScaleFormat, ScaleRule

__all__ = ["quantize", "quantize_reference"]

# Integer codes the kernels branch on.
_MIDRISE, _SIGNED, _ASYM, _FP, _TABLE = range(5)
_NONE, _ABSMAX, _RMS, _MSE = range(4)
_FP32, _BF16, _FP16, _E8M0, _E4M3, _INT8 = range(6)
_RULE_CODE = {
    ScaleRule.NONE: _NONE,
    ScaleRule.ABSMAX: _ABSMAX,
    ScaleRule.RMS: _RMS,
    ScaleRule.MSE: _MSE,
}
_FORMAT_CODE = {
    ScaleFormat.FP32: _FP32,
    ScaleFormat.BF16: _BF16,
    ScaleFormat.FP16: _FP16,
    ScaleFormat.E8M0: _E8M0,
    ScaleFormat.E4M3: _E4M3,
    ScaleFormat.INT8: _INT8,
}
_GLOBAL_FORMATS = (_E4M3, _INT8)  # stored relative to a per-tensor second-level scale

_BF16_P = fp_params(8, 7, FpStyle.IEEE)
_FP16_P = fp_params(5, 10, FpStyle.IEEE)
_E4M3_P = fp_params(4, 3, FpStyle.FN)
_E4M3_MAX = 448.0
# Plain module constants: numba freezes them into the kernels.
_BF16_EMIN, _BF16_M, _BF16_MAX = _BF16_P
_FP16_EMIN, _FP16_M, _FP16_MAX = _FP16_P
_E4M3_EMIN, _E4M3_M = _E4M3_P.emin, _E4M3_P.mantissa_bits
_INT8_MAX = 255.0
_E8M0_EXP = 127  # e8m0 holds 2^-127 ... 2^127
_SQRT_HALF = 0.7071067811865476  # log2 m >= -1/2  <=>  m >= 2^-1/2

# The mse rule's clipping ratios: a coarse pass 1.00, 0.99, ..., 0.20, then a fine pass of
# steps of 0.001 around the best coarse ratio (GPTQ searches the same range in 100 steps).
_MSE_COARSE = 81
_MSE_COARSE_STEP = 0.01
_MSE_FINE = 9
_MSE_FINE_STEP = 0.001
_MSE_MIN_RATIO = 0.2
_SUM_BLOCK = 16  # squared errors added between two checks of the bound


class _Plan(NamedTuple):
    """A stage reduced to the numbers the kernels need (validated, defaults resolved)."""

    grid: int
    n: int  # number of integer codes (2^b) for int grids
    fp: FpParams  # fp grids; unused otherwise
    table: np.ndarray  # lut / lloyd-max levels (float64, sorted); a 1-element stand-in otherwise
    mids: np.ndarray  # their midpoints
    rule: int
    constant: float  # rms multiplier
    gmax: float
    emax: int
    sfmt: int
    group: int  # entries per group within a row
    tensor: bool  # one group for the whole tensor


def _plan(stage: Quantize, row_length: int) -> _Plan:
    grid = stage.grid
    if grid is GridKind.INT:
        code = {IntStyle.MIDRISE: _MIDRISE, IntStyle.SIGNED: _SIGNED, IntStyle.ASYMMETRIC: _ASYM}[
            stage.resolved_int_style
        ]
    else:
        code = {GridKind.FP: _FP, GridKind.LUT: _TABLE, GridKind.LLOYD_MAX: _TABLE}[grid]
    if code == _ASYM and stage.scale is ScaleRule.RMS:
        raise SpecError(
            "quantize: an asymmetric int grid takes scale 'absmax' or 'mse', not 'rms' "
            "(its zero point comes from the group's min/max)"
        )
    table = grid_levels(stage) if code == _TABLE else np.zeros(1)
    fp = (
        fp_params(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
        if code == _FP
        else _BF16_P
    )
    constant = 1.0
    if stage.scale is ScaleRule.RMS:
        constant = (
            stage.scale_constant
            if stage.scale_constant is not None
            else optimal_rms_constant(stage)
        )
    group = stage.group
    return _Plan(
        grid=code,
        n=2 ** (stage.bits or 1),
        fp=fp,
        table=np.ascontiguousarray(table, dtype=np.float64),
        mids=np.ascontiguousarray(0.5 * (table[:-1] + table[1:]), dtype=np.float64),
        rule=_RULE_CODE[stage.scale],
        constant=float(constant),
        gmax=grid_max(stage),
        emax=grid_emax(stage),
        sfmt=_FORMAT_CODE[stage.scale_format],
        group=row_length if isinstance(group, str) else group,
        tensor=group == "tensor",
    )


plan = _plan  # public name the torch twin reads (stand-in until scalar.py names it so)


def _validate(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    return check_input(stage, Quantize, "quantize", x, mask)


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def _cast_f32(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)


def _levels_reference(p: _Plan, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Native level (q - z for asymmetric grids) of every scaled value ``v``."""
    n = p.n
    if p.grid == _MIDRISE:
        h = v * (0.5 * (n - 1))
        j = np.minimum(np.floor(np.abs(h)), n // 2 - 1.0)
        return np.copysign((2.0 * j + 1.0) / (n - 1), h)
    if p.grid == _SIGNED:
        return np.clip(np.rint(v), 1.0 - n // 2, n // 2 - 1.0)
    if p.grid == _ASYM:
        return np.clip(np.rint(v) + z, 0, n - 1) - z
    if p.grid == _FP:
        return _fp_round_reference(v, p.fp)
    return p.table[np.searchsorted(p.mids, v, side="right")]


def _dequantize_reference(p: _Plan, xg: np.ndarray, scale: np.ndarray, z: np.ndarray) -> np.ndarray:
    """level * scale in float64 (0 where the scale is 0); scale and z broadcast over groups."""
    safe = np.where(scale > 0, scale, 1.0)
    return np.where(scale > 0, _levels_reference(p, xg / safe, z) * scale, 0.0)


def _e8m0_reference(p: _Plan, raw: np.ndarray, amax: np.ndarray, mse_rule: bool) -> np.ndarray:
    m, e = np.frexp(raw)  # raw = m * 2^e, m in [0.5, 1)
    if p.rule == _ABSMAX and not mse_rule and p.grid != _ASYM:
        k = np.frexp(amax)[1] - 1 - p.emax  # OCP MX: floor(log2 amax) - emax_elem
    elif p.rule == _ABSMAX and not mse_rule:
        k = np.where(m == 0.5, e - 1, e)  # ceil(log2 raw)
    else:
        k = np.where(m >= _SQRT_HALF, e, e - 1)  # log2 raw rounded to nearest
    return np.where(raw > 0, np.ldexp(1.0, np.clip(k, -_E8M0_EXP, _E8M0_EXP)), 0.0)


def _store_local_reference(
    p: _Plan, raw: np.ndarray, amax: np.ndarray, mse_rule: bool = False
) -> np.ndarray:
    """The stored scale for per-group formats; float32-rounded raw for the two-level ones."""
    if p.sfmt == _BF16:
        return _fp_round_reference(raw, _BF16_P)
    if p.sfmt == _FP16:
        return _fp_round_reference(raw, _FP16_P)
    if p.sfmt == _E8M0:
        return _e8m0_reference(p, raw, amax, mse_rule)
    return _cast_f32(raw)


def _store_global_reference(p: _Plan, raw: np.ndarray, top: float | None = None) -> np.ndarray:
    if top is None:
        top = float(np.max(raw)) if raw.size else 0.0
    if p.sfmt == _E4M3:
        s_t = float(_cast_f32(top / _E4M3_MAX))
        if s_t == 0:
            return np.zeros_like(raw)
        return _fp_round_reference(raw / s_t, _E4M3_P) * s_t
    s_t = float(_cast_f32(top / _INT8_MAX))
    if s_t == 0:
        return np.zeros_like(raw)
    return np.where(raw > 0, np.clip(np.rint(raw / s_t), 1.0, _INT8_MAX) * s_t, 0.0)


def _zero_point_reference(p: _Plan, lo: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if p.grid != _ASYM:
        return np.zeros_like(scale)
    safe = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(-lo / safe), 0, p.n - 1)


def _ordered_sum(v: np.ndarray, axis: int) -> np.ndarray:
    # Summed strictly left to right (cumulative sum), the kernel's order, rather than
    # numpy's pairwise order: the twins then agree bit for bit.
    return np.cumsum(v, axis=axis).take(-1, axis=axis) if v.shape[axis] else np.sum(v, axis=axis)


def _group_error_reference(
    p: _Plan, xg: np.ndarray, kg: np.ndarray, scale: np.ndarray, z: np.ndarray
) -> np.ndarray:
    err = np.where(
        kg, np.square(_dequantize_reference(p, xg, scale[..., None], z[..., None]) - xg), 0.0
    )
    err = _ordered_sum(err, axis=-1)  # (rows, groups per row)
    return _ordered_sum(err, axis=0)[None] if p.tensor else err


def _mse_candidate_reference(
    p: _Plan, ratio: np.ndarray, stats: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(scale the error is measured with, zero point) for clipping ratio ``ratio``."""
    base = (stats["hi"] - stats["lo"]) / (p.n - 1) if p.grid == _ASYM else stats["amax"] / p.gmax
    scale = _store_local_reference(p, ratio * base, stats["amax"], mse_rule=True)
    return scale, _zero_point_reference(p, ratio * stats["lo"], scale)


def _mse_ratio_reference(
    p: _Plan, xg: np.ndarray, kg: np.ndarray, stats: dict[str, np.ndarray]
) -> np.ndarray:
    shape = stats["amax"].shape
    best_r, best_err = np.full(shape, np.nan), np.full(shape, np.inf)
    for k in range(_MSE_COARSE):
        r = np.full(shape, 1.0 - _MSE_COARSE_STEP * k)
        err = _group_error_reference(p, xg, kg, *_mse_candidate_reference(p, r, stats))
        better = err < best_err
        best_r, best_err = np.where(better, r, best_r), np.where(better, err, best_err)
    coarse = best_r
    for j in range(-_MSE_FINE, _MSE_FINE + 1):
        if j == 0:
            continue
        r = coarse + _MSE_FINE_STEP * j
        err = _group_error_reference(p, xg, kg, *_mse_candidate_reference(p, r, stats))
        better = (err < best_err) & (r >= _MSE_MIN_RATIO) & (r <= 1.0)
        best_r, best_err = np.where(better, r, best_r), np.where(better, err, best_err)
    return best_r


def quantize_reference(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, top_raw_scale: float | None = None
) -> np.ndarray:
    """Plain vectorized numpy twin of :func:`quantize` (same results, bit for bit)."""
    x, mask = _validate(stage, x, mask)
    rows, cols = x.shape
    if x.size == 0:
        return x.copy()
    p = _plan(stage, cols)
    _check_top(p, top_raw_scale)
    kept = np.ones(x.shape, dtype=bool) if mask is None else mask
    if p.rule == _NONE:
        return np.where(kept, _fp_round_reference(x.astype(np.float64), p.fp), 0.0).astype(np.float32)
    xg, kg, stats, ratio, raw = _raw_scales_reference(p, x, kept)
    if p.sfmt in _GLOBAL_FORMATS:
        scale = _store_global_reference(p, raw, top_raw_scale)
    else:
        scale = _store_local_reference(p, raw, stats["amax"], mse_rule=p.rule == _MSE)
    z = _zero_point_reference(p, ratio * stats["lo"], scale)
    out = _dequantize_reference(p, xg, scale[..., None], z[..., None])
    return np.where(kg, out, 0.0).astype(np.float32).reshape(rows, cols)


def _raw_scales_reference(
    p: _Plan, x: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(groups of x in float64, their kept masks, statistics, mse ratio, raw scale)."""
    rows, cols = x.shape
    x64 = x.astype(np.float64)
    xg = x64.reshape(rows, cols // p.group, p.group)  # (rows, groups per row, group)
    kg = kept.reshape(xg.shape)
    stats = {
        "count": np.sum(kg, axis=-1).astype(np.float64),
        "ss": _ordered_sum(np.where(kg, xg * xg, 0.0), axis=-1),
        "amax": np.max(np.where(kg, np.abs(xg), 0.0), axis=-1),
        "lo": np.minimum(np.min(np.where(kg, xg, np.inf), axis=-1), 0.0),
        "hi": np.maximum(np.max(np.where(kg, xg, -np.inf), axis=-1), 0.0),
    }
    if p.tensor:  # one group: combine the per-row partial statistics, rows in order
        stats = {
            "count": np.sum(stats["count"], axis=0, keepdims=True),
            "ss": _ordered_sum(stats["ss"], axis=0)[None],
            "amax": np.max(stats["amax"], axis=0, keepdims=True),
            "lo": np.min(stats["lo"], axis=0, keepdims=True),
            "hi": np.max(stats["hi"], axis=0, keepdims=True),
        }

    if p.rule == _MSE:
        ratio = _mse_ratio_reference(p, xg, kg, stats)
    else:
        ratio = np.ones_like(stats["amax"])
    if p.rule == _RMS:
        count = np.maximum(stats["count"], 1.0)
        raw = p.constant * np.sqrt(stats["ss"] / count)
    elif p.grid == _ASYM:
        raw = ratio * ((stats["hi"] - stats["lo"]) / (p.n - 1))
    else:
        raw = ratio * (stats["amax"] / p.gmax)
    return xg, kg, stats, ratio, raw


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


# Every per-group helper works on 1-D slices of one row: indices that start at 0 let the
# compiler drop numba's negative-index wraparound and vectorize the loops. ``gr`` is the
# grid tuple (code, n, emin, mantissa bits, max value, midpoints, levels) of _grid_args.


@numba.njit(cache=True, inline="always")
def _k_level(v, z, grid, gr):
    """Native level of the scaled value v (q - z for asymmetric grids); ``grid`` is gr[0]."""
    n = gr[1]
    if grid == _MIDRISE:
        h = v * (0.5 * (n - 1))
        j = min(np.floor(abs(h)), n // 2 - 1.0)
        return math.copysign((2.0 * j + 1.0) / (n - 1), h)
    if grid == _SIGNED:
        return min(max(np.rint(v), 1.0 - n // 2), n // 2 - 1.0)
    if grid == _ASYM:
        return min(max(np.rint(v) + z, 0.0), n - 1.0) - z
    if grid == _FP:
        return _k_fp_round(v, gr[2], gr[3], gr[4])
    k = 0  # searchsorted(mids, v, side="right"), by counting: no branches to mispredict
    for m in gr[5]:
        k += m <= v
    return gr[6][k]


@numba.njit(cache=True, inline="always")
def _k_stats(xs, ms, has_mask):
    """(count, sum of squares, amax, min(0, min), max(0, max)) over the kept entries."""
    count, ss, amax, lo, hi = 0.0, 0.0, 0.0, 0.0, 0.0
    for j in range(xs.size):
        keep = not has_mask or ms[j]
        v = np.float64(xs[j]) if keep else 0.0  # 0 is neutral for every statistic here
        count += keep
        ss += v * v
        amax = max(amax, abs(v))
        lo = min(lo, v)
        hi = max(hi, v)
    return count, ss, amax, lo, hi


@numba.njit(cache=True, inline="always")
def _k_frexp(x):
    """math.frexp(x), read off the float64 bits when x is normal (no libm call: the mse
    search stores a scale per candidate)."""
    bits = np.float64(x).view(np.int64)
    biased = (bits >> 52) & 0x7FF
    if biased == 0 or biased == 0x7FF:  # zero, subnormal, inf, NaN
        m, e = math.frexp(x)
        return m, np.int64(e)
    e = biased - 1022
    return np.int64(bits - (e << 52)).view(np.float64), e


@numba.njit(cache=True, inline="always")
def _k_pow2(k):
    """2.0^k for k in the normal range [-1022, 1023], built from its float64 bits."""
    return np.int64((k + 1023) << 52).view(np.float64)


@numba.njit(cache=True)
def _k_store_local(raw, amax, sfmt, rule, asym, emax, mse_rule):
    """Stored scale for per-group formats; float32-rounded raw for the two-level ones."""
    if sfmt == _BF16:
        return _k_fp_round(raw, _BF16_EMIN, _BF16_M, _BF16_MAX)
    if sfmt == _FP16:
        return _k_fp_round(raw, _FP16_EMIN, _FP16_M, _FP16_MAX)
    if sfmt == _E8M0:
        if not raw > 0:
            return 0.0
        m, e = _k_frexp(raw)
        if rule == _ABSMAX and not mse_rule and not asym:
            k = _k_frexp(amax)[1] - 1 - emax
        elif rule == _ABSMAX and not mse_rule:
            k = e - 1 if m == 0.5 else e
        else:
            k = e if m >= _SQRT_HALF else e - 1
        return _k_pow2(min(max(k, -_E8M0_EXP), _E8M0_EXP))
    return np.float64(np.float32(raw))


@numba.njit(cache=True)
def _k_zero_point(lo, scale, asym, n):
    if not asym or not scale > 0:
        return 0.0
    return min(max(np.rint(-lo / scale), 0.0), n - 1.0)


@numba.njit(cache=True, inline="always")
def _k_table_index(xg, s, mids, v, k):
    """k[j] = table index of the level nearest xg[j] / s (v[j]): the midpoints <= v counted
    one midpoint at a time over the whole group, a vectorizable loop instead of a search per
    entry. Same index as _k_level's."""
    for j in range(xg.size):
        v[j] = np.float64(xg[j]) / s
        k[j] = 0
    for m in mids:
        for j in range(xg.size):
            k[j] += v[j] >= m


@numba.njit(cache=True, inline="always")
def _k_sq_errors(xs, scale, z, grid, gr, sq, idx):
    """sq[j] = (x_hat - x)^2 for x = xs[j], masked or not, a scale > 0; idx: table index
    scratch. Inlined once per grid with a constant grid code (as _k_write_row_grid), so the
    loops carry no branches and vectorize."""
    if grid == _TABLE:
        _k_table_index(xs, scale, gr[5], sq, idx)  # sq: the scaled values until overwritten
    for j in range(xs.size):
        v = np.float64(xs[j])
        level = gr[6][idx[j]] if grid == _TABLE else _k_level(v / scale, z, grid, gr)
        d = level * scale - v
        sq[j] = d * d


@numba.njit(cache=True, inline="always")
def _k_error_below(xs, ms, has_mask, scale, z, gr, bound, sq, idx):
    """Sum over kept entries of (x_hat - x)^2, in order, abandoned once it reaches ``bound``.

    The terms are nonnegative, so the partial sums never decrease: a partial sum >= bound
    (what is returned then) means the full sum is >= bound too. Below the bound, the full sum.
    The terms are computed first, into the scratch ``sq`` (``idx``: table indices) of at
    least xs.size entries, in loops the compiler vectorizes, then added in order.
    """
    grid = gr[0]
    if not scale > 0:  # x_hat = 0
        for j in range(xs.size):
            sq[j] = np.float64(xs[j]) * np.float64(xs[j])
    elif grid == _MIDRISE:
        _k_sq_errors(xs, scale, z, _MIDRISE, gr, sq, idx)
    elif grid == _SIGNED:
        _k_sq_errors(xs, scale, z, _SIGNED, gr, sq, idx)
    elif grid == _ASYM:
        _k_sq_errors(xs, scale, z, _ASYM, gr, sq, idx)
    elif grid == _FP:
        _k_sq_errors(xs, scale, z, _FP, gr, sq, idx)
    else:
        _k_sq_errors(xs, scale, z, _TABLE, gr, sq, idx)
    # The bound is checked every _SUM_BLOCK terms: a check per term would cost about as much
    # as the addition. Unsigned indices spare numba's negative-index wraparound.
    err, n, block = 0.0, np.uint64(xs.size), np.uint64(_SUM_BLOCK)
    for start in range(np.uint64(0), n, block):
        for j in range(start, min(start + block, n)):
            err += sq[j] if not has_mask or ms[j] else 0.0
        if err >= bound:
            break
    return err


@numba.njit(cache=True, inline="always")
def _k_write_row_grid(xs, ms, has_mask, os, g, scales, zs, grid, gr):
    # The groups of one row: inlined once per grid, so each copy has a constant grid code
    # and the compiler drops the other grids' branches from the inner loop.
    for b in range(scales.size):
        s, z = scales[b], zs[b]
        xg, og = xs[b * g : (b + 1) * g], os[b * g : (b + 1) * g]
        mg = ms[b * g : (b + 1) * g] if has_mask else ms
        if not s > 0:
            og[:] = 0.0
            continue
        for j in range(g):
            level = _k_level(np.float64(xg[j]) / s, z, grid, gr)
            og[j] = level * s if not has_mask or mg[j] else 0.0


@numba.njit(cache=True, inline="always")
def _k_write_row_table(xs, ms, has_mask, os, g, scales, gr):
    table = gr[6]
    v, k = np.empty(g), np.empty(g, dtype=np.int64)
    for b in range(scales.size):
        s = scales[b]
        xg, og = xs[b * g : (b + 1) * g], os[b * g : (b + 1) * g]
        mg = ms[b * g : (b + 1) * g] if has_mask else ms
        if not s > 0:
            og[:] = 0.0
            continue
        _k_table_index(xg, s, gr[5], v, k)
        for j in range(g):
            og[j] = table[k[j]] * s if not has_mask or mg[j] else 0.0


@numba.njit(cache=True)
def _k_write_row(xs, ms, has_mask, os, g, scales, zs, gr):
    """Round one row, group b with scale scales[b] and zero point zs[b]; zero scale -> 0."""
    grid = gr[0]
    if grid == _MIDRISE:
        _k_write_row_grid(xs, ms, has_mask, os, g, scales, zs, _MIDRISE, gr)
    elif grid == _SIGNED:
        _k_write_row_grid(xs, ms, has_mask, os, g, scales, zs, _SIGNED, gr)
    elif grid == _ASYM:
        _k_write_row_grid(xs, ms, has_mask, os, g, scales, zs, _ASYM, gr)
    elif grid == _FP:
        _k_write_row_grid(xs, ms, has_mask, os, g, scales, zs, _FP, gr)
    else:
        _k_write_row_table(xs, ms, has_mask, os, g, scales, gr)


@numba.njit(cache=True, inline="always")
def _k_candidate(r, amax, lo, hi, sfmt, asym, n, gmax, emax):
    """(scale, zero point) the mse rule measures clipping ratio r with."""
    base = (hi - lo) / (n - 1) if asym else amax / gmax
    scale = _k_store_local(r * base, amax, sfmt, _MSE, asym, emax, True)
    return scale, _k_zero_point(r * lo, scale, asym, n)


@numba.njit(cache=True, inline="always")
def _k_coarse_candidate(k, amax, lo, hi, sfmt, asym, n, gmax, emax):
    """(scale, zero point) of coarse ratio number k; NaNs, equal to nothing, out of range."""
    if k < 0 or k >= _MSE_COARSE:
        return np.nan, np.nan
    return _k_candidate(1.0 - _MSE_COARSE_STEP * k, amax, lo, hi, sfmt, asym, n, gmax, emax)


@numba.njit(cache=True)
def _k_mse_ratio(xs, ms, has_mask, amax, lo, hi, sfmt, gr, gmax, emax, sq, idx):
    """The best clipping ratio, as trying every ratio in order finds it (first best wins,
    strict <), skipping work that cannot change the outcome: a candidate whose (scale, zero
    point) repeats one met before has the same error, so it cannot win and is not measured;
    a measurement stops once its partial error reaches the best so far (_k_error_below).

    Which repeats are looked for: the stored scale is monotone in the ratio, and so is the
    zero point for a fixed scale, so equal candidates are adjacent in ratio order. In the
    coarse pass the previous candidate is the only one to compare with; a fine ratio lies
    strictly between the coarse neighbours of the best coarse ratio, so it can only repeat
    one of those three or the previous fine candidate.
    """
    asym, n = gr[0] == _ASYM, gr[1]
    best_r, best_err, best_k = np.nan, np.inf, -1
    coarse, prev_s, prev_z = np.nan, np.nan, np.nan
    # The fine pass's coarse neighbours of the best coarse ratio; NaNs equal nothing.
    up_s, up_z, at_s, at_z, down_s, down_z = np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    # Both passes in one loop, so that the (inlined) error measurement is compiled once.
    for k in range(_MSE_COARSE + 2 * _MSE_FINE):
        if k < _MSE_COARSE:
            r = 1.0 - _MSE_COARSE_STEP * k
        else:
            if k == _MSE_COARSE:
                coarse, prev_s, prev_z = best_r, np.nan, np.nan
                up_s, up_z = _k_coarse_candidate(
                    best_k - 1, amax, lo, hi, sfmt, asym, n, gmax, emax
                )
                at_s, at_z = _k_coarse_candidate(best_k, amax, lo, hi, sfmt, asym, n, gmax, emax)
                down_s, down_z = _k_coarse_candidate(
                    best_k + 1, amax, lo, hi, sfmt, asym, n, gmax, emax
                )
            j = k - _MSE_COARSE - _MSE_FINE  # fine steps -_MSE_FINE ... _MSE_FINE, 0 left out
            j += j >= 0
            r = coarse + _MSE_FINE_STEP * j
            if r < _MSE_MIN_RATIO or r > 1.0:
                continue
        s, z = _k_candidate(r, amax, lo, hi, sfmt, asym, n, gmax, emax)
        repeat = (
            (s == prev_s and z == prev_z)
            or (s == at_s and z == at_z)
            or (s == up_s and z == up_z)
            or (s == down_s and z == down_z)
        )
        prev_s, prev_z = s, z
        if repeat:
            continue
        err = _k_error_below(xs, ms, has_mask, s, z, gr, best_err, sq, idx)
        if err < best_err:
            best_r, best_err, best_k = r, err, k
    return best_r


@numba.njit(cache=True)
def _k_raw(rule, constant, count, ss, amax, lo, hi, ratio, asym, n, gmax):
    if rule == _RMS:
        return constant * math.sqrt(ss / max(count, 1.0))
    if asym:
        return ratio * ((hi - lo) / (n - 1))
    return ratio * (amax / gmax)


@numba.njit(cache=True, inline="always")
def _k_mask_row(mask, has_mask, i):
    # Without a mask, a 1-element stand-in that is never read.
    return mask[i] if has_mask else mask[0]


@numba.njit(cache=True, parallel=True)
def _k_groups(x, mask, has_mask, out, g, fused, rule, constant, sfmt, gmax, emax, gr, stats, ratio):
    """Per group: statistics and (mse) clipping ratio; if ``fused``, also the stored scales,
    and the row is rounded right after, while it is still in cache (per-group formats).

    Otherwise (two-level formats, tensor groups) the statistics (count, sum of squares, amax,
    lo, hi) go to ``stats`` (rows, groups, 5) and the ratio to ``ratio``; ``rule`` = _NONE
    there skips the search (tensor groups search over the whole tensor instead).
    """
    rows, cols = x.shape
    groups = cols // g
    asym, n = gr[0] == _ASYM, gr[1]
    # Two-level formats measure mse candidates with the float32 raw scale.
    measure = sfmt if fused else _FP32
    for i in numba.prange(rows):
        m_row = _k_mask_row(mask, has_mask, i)
        scales, zs = np.empty(groups), np.empty(groups)
        n_sq = g if rule == _MSE else 0  # the mse search's scratch
        sq, idx = np.empty(n_sq), np.empty(n_sq, dtype=np.int64)
        for b in range(groups):
            xs = x[i, b * g : (b + 1) * g]
            ms = m_row[b * g : (b + 1) * g] if has_mask else m_row
            count, ss, amax, lo, hi = _k_stats(xs, ms, has_mask)
            r = 1.0
            if rule == _MSE:
                r = _k_mse_ratio(xs, ms, has_mask, amax, lo, hi, measure, gr, gmax, emax, sq, idx)
            if fused:
                s_raw = _k_raw(rule, constant, count, ss, amax, lo, hi, r, asym, n, gmax)
                scales[b] = _k_store_local(s_raw, amax, sfmt, rule, asym, emax, rule == _MSE)
                zs[b] = _k_zero_point(r * lo, scales[b], asym, n)
            else:
                stats[i, b, 0] = count
                stats[i, b, 1] = ss
                stats[i, b, 2] = amax
                stats[i, b, 3] = lo
                stats[i, b, 4] = hi
                ratio[i, b] = r
        if fused:
            _k_write_row(x[i], m_row, has_mask, out[i], g, scales, zs, gr)


@numba.njit(cache=True, parallel=True)
def _k_write_groups(x, mask, has_mask, out, g, scales, zs, gr):
    for i in numba.prange(x.shape[0]):
        _k_write_row(
            x[i], _k_mask_row(mask, has_mask, i), has_mask, out[i], g, scales[i], zs[i], gr
        )


@numba.njit(cache=True, parallel=True)
def _k_tensor_errors(x, mask, has_mask, scales, zs, gr):
    """Squared error of the whole tensor for each candidate (scale, zero point): rows in
    parallel, then each candidate's row sums added in row order (the reference's order)."""
    rows, k = x.shape[0], scales.size
    per_row = np.empty((rows, k))
    for i in numba.prange(rows):
        m_row = _k_mask_row(mask, has_mask, i)
        sq, idx = np.empty(x.shape[1]), np.empty(x.shape[1], dtype=np.int64)
        for c in range(k):
            per_row[i, c] = _k_error_below(
                x[i], m_row, has_mask, scales[c], zs[c], gr, np.inf, sq, idx
            )
    total = np.zeros(k)
    for i in range(rows):
        for c in range(k):
            total[c] += per_row[i, c]
    return total


@numba.njit(cache=True)
def _k_top(raw):
    top = 0.0
    for i in range(raw.shape[0]):
        for b in range(raw.shape[1]):
            top = max(top, raw[i, b])
    return top


@numba.njit(cache=True)
def _k_store_global(raw, sfmt, top):
    """Stored effective scales of a two-level format: ``top`` is the largest raw scale of the
    tensor, which sets the second-level scale s_t."""
    rows, groups = raw.shape
    out = np.zeros_like(raw)
    s_t = np.float64(np.float32(top / (_E4M3_MAX if sfmt == _E4M3 else _INT8_MAX)))
    if not s_t > 0:
        return out
    for i in range(rows):
        for b in range(groups):
            if sfmt == _E4M3:
                out[i, b] = _k_fp_round(raw[i, b] / s_t, _E4M3_EMIN, _E4M3_M, _E4M3_MAX) * s_t
            elif raw[i, b] > 0:
                out[i, b] = min(max(np.rint(raw[i, b] / s_t), 1.0), _INT8_MAX) * s_t
    return out


@numba.njit(cache=True)
def _k_raws(rule, constant, count, ss, amax, lo, hi, ratio, asym, n, gmax):
    raw = np.empty_like(ratio)
    for i in range(raw.shape[0]):
        for b in range(raw.shape[1]):
            raw[i, b] = _k_raw(
                rule,
                constant,
                count[i, b],
                ss[i, b],
                amax[i, b],
                lo[i, b],
                hi[i, b],
                ratio[i, b],
                asym,
                n,
                gmax,
            )
    return raw


@numba.njit(cache=True)
def _k_zero_points(ratio, lo, scales, asym, n):
    zs = np.zeros_like(scales)
    for i in range(scales.shape[0]):
        for b in range(scales.shape[1]):
            zs[i, b] = _k_zero_point(ratio[i, b] * lo[i, b], scales[i, b], asym, n)
    return zs


def _grid_args(p: _Plan) -> tuple:
    return (p.grid, p.n, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value, p.mids, p.table)


def quantize(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, top_raw_scale: float | None = None
) -> np.ndarray:
    """Quantize-dequantize ``x`` (rows, row_length) with one scalar stage (module docstring).

    Fused numba kernels, parallel over rows; the same results as :func:`quantize_reference`.
    ``top_raw_scale`` (two-level scale formats, e4m3 and int8, only): the largest raw group
    scale of the whole tensor that ``x`` is some rows of (:func:`top_raw_scale` of each chunk,
    maximized), so that the tensor can be quantized a chunk of rows at a time with the
    tensor's second-level scale: the same result as quantizing it whole.
    """
    x, mask = _validate(stage, x, mask)
    if x.size == 0:
        return x.copy()
    p = _plan(stage, x.shape[1])
    _check_top(p, top_raw_scale)
    if p.rule == _NONE:
        out = fp_cast(x, stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
        if mask is not None:
            np.copyto(out, np.float32(0.0), where=~mask)
        return out
    out = np.empty_like(x)
    has_mask = mask is not None
    m = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    gr = _grid_args(p)
    g = x.shape[1] if p.tensor else p.group
    fused = not p.tensor and p.sfmt not in _GLOBAL_FORMATS
    stats, ratio = _group_pass(p, x, m, has_mask, out, fused)
    if fused:
        return out
    if p.tensor:
        scales, zs = _tensor_scale(p, x, m, has_mask, gr, stats[:, 0, :])
    else:
        raw, lo = _raws(p, stats, ratio)
        top = _k_top(raw) if top_raw_scale is None else float(top_raw_scale)
        scales = _k_store_global(raw, p.sfmt, top)
        zs = _k_zero_points(ratio, lo, scales, p.grid == _ASYM, p.n)
    _k_write_groups(x, m, has_mask, out, g, scales, zs, gr)
    return out


def top_raw_scale(
    stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None, *, reference: bool = False
) -> float:
    """The largest raw group scale of ``x`` for a two-level scale format (e4m3, int8): the
    first pass of quantizing a tensor a chunk of rows at a time (see :func:`quantize`)."""
    x, mask = _validate(stage, x, mask)
    p = _plan(stage, x.shape[1])
    _check_top(p, 0.0)
    if x.size == 0:
        return 0.0
    if reference:
        raw = _raw_scales_reference(p, x, np.ones(x.shape, dtype=bool) if mask is None else mask)[-1]
        return float(np.max(raw))
    has_mask = mask is not None
    m = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    unused_out = np.empty((1, 1), dtype=np.float32)  # written only by the fused (per-group) path
    return float(_k_top(_raws(p, *_group_pass(p, x, m, has_mask, unused_out, False))[0]))


def _check_top(p: _Plan, top: float | None) -> None:
    if top is not None and (p.tensor or p.sfmt not in _GLOBAL_FORMATS or p.rule == _NONE):
        raise SpecError("quantize: a tensor-wide top raw scale applies only to e4m3 and int8 scales of groups")
    if top is not None and not (math.isfinite(top) and top >= 0):
        raise DataError(f"quantize: top_raw_scale = {top} must be finite and >= 0")


def _group_pass(
    p: _Plan, x: np.ndarray, m: np.ndarray, has_mask: bool, out: np.ndarray, fused: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group statistics and mse ratios (and, if ``fused``, the quantized ``out``)."""
    rows, g = x.shape[0], x.shape[1] if p.tensor else p.group
    stats, ratio = np.zeros((rows, x.shape[1] // g, 5)), np.ones((rows, x.shape[1] // g))
    rule = _NONE if p.tensor and p.rule == _MSE else p.rule
    _k_groups(
        x, m, has_mask, out, g, fused, rule, p.constant, p.sfmt, p.gmax, p.emax, _grid_args(p), stats, ratio
    )
    return stats, ratio


def _raws(p: _Plan, stats: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw scale, lo) per group from the group pass."""
    count, ss, amax, lo, hi = np.moveaxis(stats, -1, 0)
    raw = _k_raws(p.rule, p.constant, count, ss, amax, lo, hi, ratio, p.grid == _ASYM, p.n, p.gmax)
    return raw, lo


def _tensor_scale(
    p: _Plan, x: np.ndarray, m: np.ndarray, has_mask: bool, gr: tuple, row_stats: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of the single tensor-wide group, as (rows, 1) arrays."""
    count, amax = float(np.sum(row_stats[:, 0])), float(np.max(row_stats[:, 2]))
    ss = 0.0
    for v in row_stats[:, 1]:  # rows in order, as the reference sums them
        ss += float(v)
    lo, hi = float(np.min(row_stats[:, 3])), float(np.max(row_stats[:, 4]))
    asym = p.grid == _ASYM
    r = 1.0
    if p.rule == _MSE:
        measure = _FP32 if p.sfmt in _GLOBAL_FORMATS else p.sfmt

        measured: set[tuple[float, float]] = set()

        def best_of(ratios: list[float], best: tuple[float, float]) -> tuple[float, float]:
            # Candidates in one pass over the tensor; a repeated (scale, zero point) cannot
            # win (first best wins), so it is measured once (see _k_mse_ratio).
            cands: dict[float, tuple[float, float]] = {}
            for c in ratios:
                pair = _k_candidate(c, amax, lo, hi, measure, asym, p.n, p.gmax, p.emax)
                if pair not in measured:
                    measured.add(pair)
                    cands[c] = pair
            scales, zs = (np.array([pair[i] for pair in cands.values()]) for i in (0, 1))
            errs = _k_tensor_errors(x, m, has_mask, scales, zs, gr)
            for c, e in zip(cands, errs, strict=True):
                if e < best[1]:
                    best = (c, float(e))
            return best

        coarse = best_of(
            [1.0 - _MSE_COARSE_STEP * k for k in range(_MSE_COARSE)], (math.nan, math.inf)
        )
        fine = [coarse[0] + _MSE_FINE_STEP * j for j in range(-_MSE_FINE, _MSE_FINE + 1) if j != 0]
        r = best_of([c for c in fine if _MSE_MIN_RATIO <= c <= 1.0], coarse)[0]
    raw = _k_raw(p.rule, p.constant, count, ss, amax, lo, hi, r, asym, p.n, p.gmax)
    if p.sfmt in _GLOBAL_FORMATS:
        scale = float(_k_store_global(np.array([[raw]]), p.sfmt, raw)[0, 0])
    else:
        scale = _k_store_local(raw, amax, p.sfmt, p.rule, asym, p.emax, p.rule == _MSE)
    rows = x.shape[0]
    return np.full((rows, 1), scale), np.full((rows, 1), _k_zero_point(r * lo, scale, asym, p.n))
