"""Scale rules and scale storage: group statistics, the raw scale by rule (absmax, rms,
absmean, the mse rule's clipped absmax), the stored scale by format (fp32, bf16, fp16, e8m0 per group;
e4m3 and int8 relative to a per-tensor second-level scale; dq8, bitsandbytes' double
quantization) and the asymmetric zero point.

Each numba kernel (``k_*``) sits beside its numpy twin (``*_reference``); the package
docstring states the rules.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.fpcast import k_fp_round, k_fp_round_to
from gmse_cli.compress.grids import fp_round_reference
from gmse_cli.compress.scalar.plans import (
    ABSMEAN,
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
    E8_CEIL,
    E8_CEIL_RAW,
    E8_EVEN,
    E8_FLOOR,
    E8_RCEIL,
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
    even_increment,
)
from gmse_cli.kernel_cache import numba

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
        "sa": ordered_sum(np.where(kg, np.abs(xg), 0.0), axis=-1),
        "amax": np.max(np.where(kg, np.abs(xg), 0.0), axis=-1),
        "lo": np.minimum(np.min(np.where(kg, xg, np.inf), axis=-1), 0.0),
        "hi": np.maximum(np.max(np.where(kg, xg, -np.inf), axis=-1), 0.0),
    }
    if p.tensor:  # one group: combine the per-row partial statistics, rows in order
        stats = {
            "count": np.sum(stats["count"], axis=0, keepdims=True),
            "ss": ordered_sum(stats["ss"], axis=0)[None],
            "sa": ordered_sum(stats["sa"], axis=0)[None],
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
    elif p.rule == ABSMEAN:  # an empty or all-zero group: 0 / 1 = 0, which outputs zeros
        raw = p.constant * (stats["sa"] / np.maximum(stats["count"], 1.0))
    elif p.grid == ASYM:
        raw = ratio * ((stats["hi"] - stats["lo"]) / (p.n - 1))
    else:
        raw = ratio * (stats["amax"] / p.gmax)
    return raw


def _ceil_log2(v: np.ndarray) -> np.ndarray:
    m, e = np.frexp(v)  # v = m * 2^e, m in [0.5, 1)
    return np.where(m == 0.5, e - 1, e)


def e8m0_exponent_reference(p: Plan, raw: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """The exponent k of the e8m0 scale 2^k by the plan's rounding (ScaleRounding), unclamped."""
    if p.e8 == E8_FLOOR:
        return np.frexp(amax)[1] - 1 - p.emax  # OCP MX: floor(log2 amax) - emax_elem
    if p.e8 == E8_CEIL:
        return _ceil_log2(amax) - p.emax
    if p.e8 == E8_EVEN:
        # torchao's EVEN: amax's float32 bits rounded half-up to the element's mantissa bits
        bits = amax.astype(np.float32).view(np.int32).astype(np.int64)
        field = (bits + even_increment(p.fp.mantissa_bits)) >> 23
        return field - 127 - p.emax
    if p.e8 == E8_RCEIL:
        return _ceil_log2(raw.astype(np.float32).astype(np.float64))
    if p.e8 == E8_CEIL_RAW:
        return _ceil_log2(raw)
    m, e = np.frexp(raw)
    return np.where(m >= SQRT_HALF, e, e - 1)  # log2 raw rounded to nearest


def e8m0_reference(p: Plan, raw: np.ndarray, amax: np.ndarray) -> np.ndarray:
    k = e8m0_exponent_reference(p, raw, amax)
    scale = np.ldexp(1.0, np.clip(k, -E8M0_EXP, E8M0_EXP))
    scale = np.where(k > E8M0_EXP, p.over, scale)  # 2^127 when saturating, else NaN
    return np.where(raw > 0, scale, 0.0)


def store_local_reference(p: Plan, raw: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """The stored scale for per-group formats; float32-rounded raw for the tensor-wide ones."""
    if p.sfmt == BF16:
        return fp_round_reference(raw, BF16_P, p.over)
    if p.sfmt == FP16:
        return fp_round_reference(raw, FP16_P, p.over)
    if p.sfmt == E8M0:
        return e8m0_reference(p, raw, amax)
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
def k_stats(xs, ms, has_mask, rule):
    """(count, moment, amax, min(0, min), max(0, max)) over the kept entries; the moment is the
    sum the scale rule code ``rule`` reads, of squares (rms) or magnitudes (absmean), else 0:
    its chain of dependent additions costs more than the rest of the pass together."""
    count, ss, amax, lo, hi = 0.0, 0.0, 0.0, 0.0, 0.0
    if rule == RMS:
        for j in range(xs.size):
            keep = not has_mask or ms[j]
            v = np.float64(xs[j]) if keep else 0.0  # 0 is neutral for every statistic here
            ss += v * v
    elif rule == ABSMEAN:
        for j in range(xs.size):
            keep = not has_mask or ms[j]
            ss += abs(np.float64(xs[j])) if keep else 0.0
    for j in range(xs.size):
        keep = not has_mask or ms[j]
        v = np.float64(xs[j]) if keep else 0.0
        count += keep
        amax = max(amax, abs(v))
        lo = min(lo, v)
        hi = max(hi, v)
    return count, ss, amax, lo, hi


@numba.njit(cache=True)
def k_raw(rule, constant, count, ss, amax, lo, hi, ratio, asym, n, gmax):
    """The raw scale of one group; ``ss``: :func:`k_stats`' moment for the rule."""
    if rule == RMS:
        return constant * math.sqrt(ss / max(count, 1.0))
    if rule == ABSMEAN:
        return constant * (ss / max(count, 1.0))
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


@numba.njit(cache=True, inline="always")
def k_ceil_log2(v):
    m, e = k_frexp(v)
    return e - 1 if m == 0.5 else e


@numba.njit(cache=True)
def k_e8m0_exponent(raw, amax, e8, emax, increment):
    """Twin of :func:`e8m0_exponent_reference` for one group (raw > 0); ``increment``:
    :func:`~gmse_cli.compress.scalar.plans.even_increment` of the element's mantissa bits."""
    if e8 == E8_FLOOR:
        return k_frexp(amax)[1] - 1 - emax
    if e8 == E8_CEIL:
        return k_ceil_log2(amax) - emax
    if e8 == E8_EVEN:
        bits = np.int64(np.float32(amax).view(np.int32))
        return ((bits + increment) >> 23) - 127 - emax
    if e8 == E8_RCEIL:
        return k_ceil_log2(np.float64(np.float32(raw)))
    if e8 == E8_CEIL_RAW:
        return k_ceil_log2(raw)
    m, e = k_frexp(raw)
    return e if m >= SQRT_HALF else e - 1


@numba.njit(cache=True)
def k_store_local(raw, amax, st):
    """Stored scale for per-group formats; float32-rounded raw for the tensor-wide ones.
    ``st``: the scale tuple (format code, e8m0 rounding, emax, even increment, overflow value)
    of :func:`~gmse_cli.compress.scalar.plans.scale_args`."""
    sfmt, e8, emax, increment, over = st
    if sfmt == BF16:
        return k_fp_round_to(raw, BF16_EMIN, BF16_M, BF16_MAX, over)
    if sfmt == FP16:
        return k_fp_round_to(raw, FP16_EMIN, FP16_M, FP16_MAX, over)
    if sfmt == E8M0:
        if not raw > 0:
            return 0.0
        k = k_e8m0_exponent(raw, amax, e8, emax, increment)
        if k > E8M0_EXP:
            return over
        return k_pow2(max(k, -E8M0_EXP))
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
