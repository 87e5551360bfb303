"""A second, independent GMSE implementation for the scalar families, written from the README's
format language and the paper's definitions only (never from ``gmse_cli.compress``): plain
float64 numpy over Gaussian rows, closed-form quadrature for RMS- and absmean-scaled grids and
magnitude pruning. ``tests/test_gmse_rederived.py`` compares it with uscl (bits per parameter:
``tests/bits_reference.py``).

It reads a resolved :class:`gmse_cli.spec.Format` (the parsed spec: field names only) and
interprets every field itself.
"""

from __future__ import annotations

import math
from functools import cache

import ml_dtypes
import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

EXACT_MIN_ROW = 4096  # README: the exact (infinite-row) path stands for rows of at least 4096
TENSOR_ELEMENTS = 1 << 17
"""Elements of one "tensor" for per-tensor statistics (absmax over the tensor, the e4m3 scales'
second level). The README says the Monte Carlo batch is that tensor but not its size; uscl's
batch is max(1, 2^17 // row_length) rows, and a tensor-wide amax grows with it."""


def phi(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


# -- element grids (full sorted level sets, native units) ----------------------------------------


def fp_levels(e: int, m: int, style: str | None = None) -> np.ndarray:
    """Every finite ExMy value, IEEE-like with subnormals. Default style as the OCP formats use:
    e >= 5 reserves the top exponent (ieee), e4m3 loses only its all-ones code (fn), smaller
    formats have every code finite."""
    style = style or ("ieee" if e >= 5 else "fn" if (e, m) == (4, 3) else "finite")
    bias = 2 ** (e - 1) - 1
    top = 2**e - 1 if style != "ieee" else 2**e - 2
    vals = [k / 2**m * 2.0 ** (1 - bias) for k in range(2**m)]  # subnormals and zero
    for ex in range(1, top + 1):
        mant = range(2**m - 1 if (style == "fn" and ex == top) else 2**m)
        vals += [(1 + k / 2**m) * 2.0 ** (ex - bias) for k in mant]
    pos = np.unique(vals)
    return np.concatenate([-pos[:0:-1], pos])


@cache
def lloyd_max_levels(bits: int) -> tuple[float, ...]:
    """Max (1960): levels at the conditional means of their cells, thresholds at midpoints."""
    y = np.linspace(-2, 2, 2**bits) if bits > 1 else np.array([-0.8, 0.8])
    for _ in range(5000):
        t = np.concatenate([[-np.inf], (y[1:] + y[:-1]) / 2, [np.inf]])
        y = (phi(t[:-1]) - phi(t[1:])) / (ndtr(t[1:]) - ndtr(t[:-1]))
    return tuple(y)


def element_levels(q) -> np.ndarray:
    """The grid a group's values are rounded to, in units of the group's scale."""
    g = q.grid.value
    if g == "fp":
        return fp_levels(q.exponent_bits, q.mantissa_bits, q.fp_style and q.fp_style.value)
    if g == "lut":
        return np.array(sorted(q.values), dtype=float)
    if g == "lloyd-max":
        return np.array(lloyd_max_levels(q.bits))
    style = q.int_style.value if q.int_style else "midrise"
    b = q.bits
    if style == "midrise":  # 2^b levels over [-1, 1]
        return np.linspace(-1.0, 1.0, 2**b)
    if style == "signed":
        return np.arange(-(2 ** (b - 1) - 1), 2 ** (b - 1), dtype=float)
    if style == "full":
        return np.arange(-(2 ** (b - 1)), 2 ** (b - 1), dtype=float)
    raise ValueError(style)  # asymmetric is handled apart


def round_to(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Nearest level, saturating beyond the ends."""
    mids = (levels[1:] + levels[:-1]) / 2
    return levels[np.searchsorted(mids, x)]


def absmax_divisor(q, levels: np.ndarray) -> float:
    """absmax rule: the group's amax maps to this many grid units."""
    if q.grid.value == "int" and (q.int_style and q.int_style.value == "full"):
        return (2**q.bits - 1) / 2  # README: scale amax / ((2^B-1)/2)
    return float(np.max(np.abs(levels)))


# -- exact GMSE of an RMS-scaled grid on N(0, 1) ---------------------------------------------------


def grid_gmse(levels: np.ndarray, c: float) -> float:
    """E(x - Q(x))^2 for x ~ N(0,1), Q rounding to c * levels (closed-form per cell)."""
    y, a, b = _cells(levels, c)
    pa, pb = phi(a), phi(b)  # zero at the infinite ends
    ta = np.where(np.isinf(a), 0.0, np.nan_to_num(a) * pa)
    tb = np.where(np.isinf(b), 0.0, np.nan_to_num(b) * pb)
    mass = ndtr(b) - ndtr(a)
    second = mass - (tb - ta)
    return float(np.sum(second - 2 * y * (pa - pb) + y * y * mass))


def _cells(levels: np.ndarray, c: float):
    y = c * np.asarray(levels, dtype=float)
    t = np.concatenate([[-np.inf], (y[1:] + y[:-1]) / 2, [np.inf]])
    return y, t[:-1], t[1:]


@cache
def optimal_constant(levels: tuple[float, ...]) -> float:
    """argmin_c grid_gmse: a scan, then the root of the derivative. With every cell's
    threshold at a midpoint (optimal for its levels), d/dc GMSE = -(2/c) sum_i y_i (E[x; cell_i]
    - y_i P(cell_i)), y_i = c * level_i (the thresholds' own motion contributes nothing)."""
    lv = np.array(levels)
    top = float(np.max(np.abs(lv)))
    cs = np.geomspace(0.05 / top, 20 / top, 400)
    i = int(np.argmin([grid_gmse(lv, c) for c in cs]))

    def slope(c: float) -> float:
        y, a, b = _cells(lv, c)
        return float(np.sum(y * ((phi(a) - phi(b)) - y * (ndtr(b) - ndtr(a)))))

    return float(brentq(slope, cs[max(i - 1, 0)], cs[min(i + 1, len(cs) - 1)], xtol=1e-15, rtol=1e-14))


def magnitude_gmse(sparsity: float) -> float:
    """paper.md's closed form for pruning the fraction s of smallest |x| (infinite rows)."""
    t = ndtri((1 + sparsity) / 2)
    return float((2 * ndtr(t) - 1) - 2 * t * phi(t))


def nm_gmse(n: int, m: int) -> float:
    """N:M on single entries: (1/m) sum over the m - n smallest order statistics of |x| (a
    half-normal) of E[|x|_(j)^2], each by quadrature of the order statistic's density."""
    from scipy.integrate import quad

    def cdf(u):
        return 2 * ndtr(u) - 1

    total = 0.0
    for j in range(1, m - n + 1):
        k = math.factorial(m) / (math.factorial(j - 1) * math.factorial(m - j))
        total += quad(lambda u, j=j, k=k: u * u * k * cdf(u) ** (j - 1) * (1 - cdf(u)) ** (m - j)
                      * 2 * phi(u), 0, 40, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    return total / m


# -- casts of scales ------------------------------------------------------------------------------


def cast_scale(s: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "fp32":
        return s.astype(np.float32).astype(np.float64)
    if fmt == "fp16":
        return s.astype(np.float16).astype(np.float64)
    if fmt == "bf16":
        return s.astype(ml_dtypes.bfloat16).astype(np.float64)
    raise ValueError(fmt)


def store_scale(s: np.ndarray, fmt: str) -> np.ndarray:
    """s: (T, groups, 1). e4m3 scales are relative to a per-tensor fp32 scale that maps the
    tensor's largest scale to e4m3's largest value, 448 (NVFP4's amax / (448 * 6))."""
    if fmt != "e4m3":
        return cast_scale(s, fmt)
    second = (s.max(axis=1, keepdims=True) / 448.0).astype(np.float32).astype(float)
    e4 = fp_levels(4, 3)
    return round_to(s / second, e4[e4 > 0]) * second  # positive scales, saturating


def e8m0_scale(amax: np.ndarray, levels: np.ndarray, rounding: str, mant_bits: int) -> np.ndarray:
    """floor (OCP, the README's 2^(floor(log2 amax) - emax_elem)); rceil (NVIDIA's hardware
    rule: the smallest power of two >= amax / max_elem, nothing saturates); even (amax first
    rounded to the element's mantissa bits, as the mxfp4-even description says). ceil and
    nearest the README only names: the spec's docstring defines them."""
    top = float(np.max(np.abs(levels)))
    emax = math.floor(math.log2(top))
    if rounding == "rceil":
        return 2.0 ** np.ceil(np.log2(amax / top))
    if rounding == "ceil":
        return 2.0 ** (np.ceil(np.log2(amax)) - emax)
    if rounding == "nearest":
        return 2.0 ** np.round(np.log2(amax / top))
    if rounding == "even":
        ex = np.floor(np.log2(amax))
        quantum = 2.0 ** (ex - mant_bits)
        amax = np.round(amax / quantum) * quantum  # numpy rounds ties to even
    return 2.0 ** (np.floor(np.log2(amax)) - emax)


# -- compressors on a (tensors, rows, L) block -------------------------------------------------------


def sparsify(x: np.ndarray, sp) -> np.ndarray:
    """Keep mask (bool) of a sparsify stage, per row."""
    L = x.shape[-1]
    pat = sp.pattern.value
    if pat == "magnitude":
        # P * L need not be whole; uscl keeps round-half-up((1 - P) * L), so a tie zeroes fewer
        k = L - math.floor((1 - sp.sparsity) * L + 0.5)
        order = np.argsort(np.abs(x), axis=-1)
        mask = np.ones_like(x, dtype=bool)
        np.put_along_axis(mask, order[..., :k], False, axis=-1)
        return mask
    block = sp.block or 1
    units = x.reshape(*x.shape[:-1], L // block, block)
    norms = np.sum(units * units, axis=-1)
    if pat == "n:m":
        grp = norms.reshape(*norms.shape[:-1], -1, sp.m)
        order = np.argsort(grp, axis=-1)
        keep = np.ones_like(grp, dtype=bool)
        np.put_along_axis(keep, order[..., : sp.m - sp.n], False, axis=-1)
        keep = keep.reshape(norms.shape)
    else:  # block: zero the P percent of blocks of K with the smallest L2 norm
        k = math.floor(sp.sparsity * norms.shape[-1] + 0.5)  # zeroed: half-up, a tie zeroes more
        order = np.argsort(norms, axis=-1)
        keep = np.ones_like(norms, dtype=bool)
        np.put_along_axis(keep, order[..., :k], False, axis=-1)
    return np.repeat(keep, block, axis=-1)


def quantize(x: np.ndarray, mask: np.ndarray, q, c: float | None) -> np.ndarray:
    """x: (T, R, L) with pruned entries already zero; ``c``: the rms or absmean rule's constant;
    returns the reconstruction."""
    T, R, L = x.shape
    gsize = {"row": L, "tensor": R * L}.get(q.group, q.group)
    xg = x.reshape(T, -1, gsize)
    mg = mask.reshape(T, -1, gsize)
    kept = np.maximum(mg.sum(-1, keepdims=True), 1)
    fmt = q.scale_format.value
    if q.int_style is not None and q.int_style.value == "asymmetric":
        # An integer zero point lies on the code range, so the range is widened to hold 0 (as
        # GPTQ and AWQ do; the README is silent, w4a16-asym's description says so)
        big = np.maximum(np.where(mg, xg, -np.inf).max(-1, keepdims=True), 0.0)
        small = np.minimum(np.where(mg, xg, np.inf).min(-1, keepdims=True), 0.0)
        top = 2**q.bits - 1
        s = store_scale((big - small) / top, fmt)
        with np.errstate(invalid="ignore", divide="ignore"):  # a group pruned whole: 0 / 0
            zp = np.clip(np.round(-small / s), 0, top)
            out = (np.clip(np.round(xg / s) + zp, 0, top) - zp) * s
        return np.where(mg, out, 0.0).reshape(x.shape)
    rule = q.scale.value
    if rule == "none" and q.grid.value == "fp" and q.exponent_bits == 8 and q.mantissa_bits == 23:
        return np.where(mg, xg.astype(np.float32), 0.0).reshape(x.shape)  # a plain fp32 cast
    levels = element_levels(q)
    if rule == "none":
        return np.where(mg, round_to(xg, levels), 0.0).reshape(x.shape)
    if rule == "absmax":
        stat = np.abs(xg).max(-1, keepdims=True)  # pruned entries are zero
    elif rule == "rms":
        stat = np.sqrt(np.sum(xg * xg, -1, keepdims=True) / kept)
    elif rule == "absmean":  # BitNet b1.58: the mean magnitude of the kept entries
        stat = np.sum(np.abs(xg), -1, keepdims=True) / kept
    else:
        raise ValueError(rule)
    if fmt == "e8m0":  # (a group pruned whole: log2 0 = -inf, a zero scale)
        mant = q.mantissa_bits if q.grid.value == "fp" else 0
        if rule == "absmax":
            rounding = q.scale_rounding.value if q.scale_rounding else "floor"
            s = e8m0_scale(stat, levels, rounding, mant)
        elif q.scale_rounding is not None and q.scale_rounding.value == "rceil":  # up, from float32
            with np.errstate(divide="ignore"):
                s = 2.0 ** np.ceil(np.log2((stat * c).astype(np.float32).astype(np.float64)))
        else:  # c * RMS or c * mean|x| to the nearest power of two in log2 (the spec's default)
            assert q.scale_rounding is None or q.scale_rounding.value == "nearest"
            with np.errstate(divide="ignore"):
                s = 2.0 ** np.round(np.log2(stat * c))
    else:
        s = store_scale(stat / absmax_divisor(q, levels) if rule == "absmax" else stat * c, fmt)
    with np.errstate(invalid="ignore", divide="ignore"):  # a group pruned whole has no scale
        out = round_to(xg / s, levels) * s
    return np.where(mg, out, 0.0).reshape(x.shape)


def hadamard_rows(x: np.ndarray, block: int) -> np.ndarray:
    from scipy.linalg import hadamard

    H = hadamard(block) / math.sqrt(block)
    sh = x.shape
    return (x.reshape(-1, block) @ H.T).reshape(sh)


def compress(x: np.ndarray, fmt) -> np.ndarray:
    """Run every stage of ``fmt`` on x (T, R, L) and return C(x) in the input's basis."""
    y = x
    mask = np.ones_like(x, dtype=bool)
    pre = None
    rotations = []
    for st in fmt.stages:
        kind = st.kind
        if kind == "rotate":
            y = hadamard_rows(y, st.block)
            rotations.append(st.block)
        elif kind == "sparsify":
            mask = sparsify(y, st)
            pre = y
            y = np.where(mask, y, 0.0)
        elif kind == "quantize":
            c = None
            if st.scale.value == "rms":
                c = st.scale_constant or optimal_constant(tuple(element_levels(st)))
            elif st.scale.value == "absmean":
                c = st.scale_constant or 1.0
            if st.scale_stats.value == "all" and pre is not None:
                # statistics over every entry before pruning, values quantized where kept
                full = quantize(pre, np.ones_like(mask), st, c)
                y = np.where(mask, full, 0.0)
            else:
                y = quantize(y, mask, st, c)
        else:
            raise ValueError(kind)
    for block in reversed(rotations):
        y = hadamard_rows(y, block)  # a normalized Sylvester Hadamard is its own inverse
    return y


# -- the estimate --------------------------------------------------------------------------------


def needs_tensor(fmt) -> bool:
    return any(getattr(s, "group", None) == "tensor" or
               getattr(getattr(s, "scale_format", None), "value", "") == "e4m3"
               for s in fmt.stages)


def exact_gmse(fmt, row_length: int) -> float | None:
    """Closed forms where the README says uscl's exact path applies, else None."""
    stages = [s for s in fmt.stages if s.kind != "rotate"]
    if row_length < EXACT_MIN_ROW or len(stages) != 1:
        return None
    (st,) = stages
    if st.kind == "sparsify" and st.pattern.value == "magnitude":
        return magnitude_gmse(st.sparsity)
    if (st.kind == "quantize" and st.scale.value == "rms" and st.group in ("row", "tensor")
            and st.scale_format.value in ("fp32",)):
        lv = element_levels(st)
        c = st.scale_constant or optimal_constant(tuple(lv))
        return grid_gmse(lv, c)
    if (st.kind == "quantize" and st.scale.value == "absmean" and st.group in ("row", "tensor")
            and st.scale_format.value == "fp32"):  # mean |x| of an infinite row: sqrt(2 / pi)
        return grid_gmse(element_levels(st), (st.scale_constant or 1.0) * math.sqrt(2 / math.pi))
    if st.kind == "quantize" and st.scale.value == "none" and st.mantissa_bits != 23:
        return grid_gmse(element_levels(st), 1.0)
    return None


def mc_gmse(fmt, bank: np.ndarray) -> tuple[float, float]:
    """Ratio estimate sum|x - C(x)|^2 / sum|x|^2 and its delta-method standard error, over i.i.d.
    units: rows, or tensors of TENSOR_ELEMENTS when a statistic spans the tensor."""
    rows, L = bank.shape
    per = max(1, TENSOR_ELEMENTS // L) if needs_tensor(fmt) else 1
    x = bank[: rows - rows % per].reshape(-1, per, L)
    err = np.sum((x - compress(x, fmt)) ** 2, axis=(1, 2))
    energy = np.sum(x * x, axis=(1, 2))
    ratio = err.sum() / energy.sum()
    k = len(err)
    se = math.sqrt(np.sum((err - ratio * energy) ** 2) / (k * (k - 1))) / energy.mean()
    return float(ratio), float(se)


def reference_gmse(fmt, bank: np.ndarray) -> tuple[float, float, str]:
    exact = exact_gmse(fmt, bank.shape[1])
    if exact is not None:
        return exact, 0.0, "exact"
    return (*mc_gmse(fmt, bank), "monte-carlo")
