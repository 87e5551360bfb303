"""Scale rules and scale storage: group statistics, the raw scale by rule (absmax, rms, the
mse rule's clipped absmax), the stored scale by format (fp32, bf16, fp16, e8m0 per group;
e4m3 and int8 relative to a per-tensor second-level scale) and the asymmetric zero point.

Each numba kernel (``k_*``) sits beside its numpy twin (``*_reference``); the package
docstring states the rules.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from gmse_cli.compress.grids import fp_round_reference, k_fp_round
from gmse_cli.compress.scalar.plans import (
    ABSMAX,
    ASYM,
    BF16,
    BF16_EMIN,
    BF16_M,
    BF16_MAX,
    BF16_P,
    E4M3,
    E4M3_EMIN,
    E4M3_M,
    E4M3_MAX,
    E4M3_P,
    E8M0,
    E8M0_EXP,
    FP16,
    FP16_EMIN,
    FP16_M,
    FP16_MAX,
    FP16_P,
    INT8_MAX,
    RMS,
    Plan,
)

SQRT_HALF = 0.7071067811865476  # log2 m >= -1/2  <=>  m >= 2^-1/2

# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def _cast_f32(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)


def ordered_sum(v: np.ndarray, axis: int) -> np.ndarray:
    # Summed strictly left to right (cumulative sum), the kernel's order, rather than
    # numpy's pairwise order: the twins then agree bit for bit.
    return np.cumsum(v, axis=axis).take(-1, axis=axis) if v.shape[axis] else np.sum(v, axis=axis)


def group_stats_reference(p: Plan, xg: np.ndarray, kg: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of the kept entries of each group (twin of :func:`k_stats`); ``xg``, ``kg``:
    (rows, groups per row, group) values in float64 and kept masks."""
    stats = {
        "count": np.sum(kg, axis=-1).astype(np.float64),
        "ss": ordered_sum(np.where(kg, xg * xg, 0.0), axis=-1),
        "amax": np.max(np.where(kg, np.abs(xg), 0.0), axis=-1),
        "lo": np.minimum(np.min(np.where(kg, xg, np.inf), axis=-1), 0.0),
        "hi": np.maximum(np.max(np.where(kg, xg, -np.inf), axis=-1), 0.0),
    }
    if p.tensor:  # one group: combine the per-row partial statistics, rows in order
        stats = {
            "count": np.sum(stats["count"], axis=0, keepdims=True),
            "ss": ordered_sum(stats["ss"], axis=0)[None],
            "amax": np.max(stats["amax"], axis=0, keepdims=True),
            "lo": np.min(stats["lo"], axis=0, keepdims=True),
            "hi": np.max(stats["hi"], axis=0, keepdims=True),
        }
    return stats


def raw_reference(p: Plan, stats: dict[str, np.ndarray], ratio: np.ndarray) -> np.ndarray:
    """The raw scale of each group by the rule (twin of :func:`k_raw`); ``ratio``: the mse
    clipping ratio (1 for the other rules)."""
    if p.rule == RMS:
        count = np.maximum(stats["count"], 1.0)
        raw = p.constant * np.sqrt(stats["ss"] / count)
    elif p.grid == ASYM:
        raw = ratio * ((stats["hi"] - stats["lo"]) / (p.n - 1))
    else:
        raw = ratio * (stats["amax"] / p.gmax)
    return raw


def e8m0_reference(p: Plan, raw: np.ndarray, amax: np.ndarray, mse_rule: bool) -> np.ndarray:
    m, e = np.frexp(raw)  # raw = m * 2^e, m in [0.5, 1)
    if p.rule == ABSMAX and not mse_rule and p.grid != ASYM:
        k = np.frexp(amax)[1] - 1 - p.emax  # OCP MX: floor(log2 amax) - emax_elem
    elif p.rule == ABSMAX and not mse_rule:
        k = np.where(m == 0.5, e - 1, e)  # ceil(log2 raw)
    else:
        k = np.where(m >= SQRT_HALF, e, e - 1)  # log2 raw rounded to nearest
    return np.where(raw > 0, np.ldexp(1.0, np.clip(k, -E8M0_EXP, E8M0_EXP)), 0.0)


def store_local_reference(
    p: Plan, raw: np.ndarray, amax: np.ndarray, mse_rule: bool = False
) -> np.ndarray:
    """The stored scale for per-group formats; float32-rounded raw for the two-level ones."""
    if p.sfmt == BF16:
        return fp_round_reference(raw, BF16_P)
    if p.sfmt == FP16:
        return fp_round_reference(raw, FP16_P)
    if p.sfmt == E8M0:
        return e8m0_reference(p, raw, amax, mse_rule)
    return _cast_f32(raw)


def store_global_reference(p: Plan, raw: np.ndarray, top: float | None = None) -> np.ndarray:
    if top is None:
        top = float(np.max(raw)) if raw.size else 0.0
    if p.sfmt == E4M3:
        s_t = float(_cast_f32(top / E4M3_MAX))
        if s_t == 0:
            return np.zeros_like(raw)
        return fp_round_reference(raw / s_t, E4M3_P) * s_t
    s_t = float(_cast_f32(top / INT8_MAX))
    if s_t == 0:
        return np.zeros_like(raw)
    return np.where(raw > 0, np.clip(np.rint(raw / s_t), 1.0, INT8_MAX) * s_t, 0.0)


def zero_point_reference(p: Plan, lo: np.ndarray, scale: np.ndarray) -> np.ndarray:
    if p.grid != ASYM:
        return np.zeros_like(scale)
    safe = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(-lo / safe), 0, p.n - 1)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def k_stats(xs, ms, has_mask):
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


@numba.njit(cache=True)
def k_raw(rule, constant, count, ss, amax, lo, hi, ratio, asym, n, gmax):
    if rule == RMS:
        return constant * math.sqrt(ss / max(count, 1.0))
    if asym:
        return ratio * ((hi - lo) / (n - 1))
    return ratio * (amax / gmax)


@numba.njit(cache=True)
def k_raws(rule, constant, count, ss, amax, lo, hi, ratio, asym, n, gmax):
    raw = np.empty_like(ratio)
    for i in range(raw.shape[0]):
        for b in range(raw.shape[1]):
            raw[i, b] = k_raw(
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


@numba.njit(cache=True, inline="always")
def k_frexp(x):
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
def k_pow2(k):
    """2.0^k for k in the normal range [-1022, 1023], built from its float64 bits."""
    return np.int64((k + 1023) << 52).view(np.float64)


@numba.njit(cache=True)
def k_store_local(raw, amax, sfmt, rule, asym, emax, mse_rule):
    """Stored scale for per-group formats; float32-rounded raw for the two-level ones."""
    if sfmt == BF16:
        return k_fp_round(raw, BF16_EMIN, BF16_M, BF16_MAX)
    if sfmt == FP16:
        return k_fp_round(raw, FP16_EMIN, FP16_M, FP16_MAX)
    if sfmt == E8M0:
        if not raw > 0:
            return 0.0
        m, e = k_frexp(raw)
        if rule == ABSMAX and not mse_rule and not asym:
            k = k_frexp(amax)[1] - 1 - emax
        elif rule == ABSMAX and not mse_rule:
            k = e - 1 if m == 0.5 else e
        else:
            k = e if m >= SQRT_HALF else e - 1
        return k_pow2(min(max(k, -E8M0_EXP), E8M0_EXP))
    return np.float64(np.float32(raw))


@numba.njit(cache=True)
def k_top(raw):
    top = 0.0
    for i in range(raw.shape[0]):
        for b in range(raw.shape[1]):
            top = max(top, raw[i, b])
    return top


@numba.njit(cache=True)
def k_store_global(raw, sfmt, top):
    """Stored effective scales of a two-level format: ``top`` is the largest raw scale of the
    tensor, which sets the second-level scale s_t."""
    rows, groups = raw.shape
    out = np.zeros_like(raw)
    s_t = np.float64(np.float32(top / (E4M3_MAX if sfmt == E4M3 else INT8_MAX)))
    if not s_t > 0:
        return out
    for i in range(rows):
        for b in range(groups):
            if sfmt == E4M3:
                out[i, b] = k_fp_round(raw[i, b] / s_t, E4M3_EMIN, E4M3_M, E4M3_MAX) * s_t
            elif raw[i, b] > 0:
                out[i, b] = min(max(np.rint(raw[i, b] / s_t), 1.0), INT8_MAX) * s_t
    return out


@numba.njit(cache=True)
def k_zero_point(lo, scale, asym, n):
    if not asym or not scale > 0:
        return 0.0
    return min(max(np.rint(-lo / scale), 0.0), n - 1.0)


@numba.njit(cache=True)
def k_zero_points(ratio, lo, scales, asym, n):
    zs = np.zeros_like(scales)
    for i in range(scales.shape[0]):
        for b in range(scales.shape[1]):
            zs[i, b] = k_zero_point(ratio[i, b] * lo[i, b], scales[i, b], asym, n)
    return zs
