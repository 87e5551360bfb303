"""Rounding onto the grid: the level of a scaled value (midrise, signed, full and asymmetric
ints, fp ExMy, lookup tables exact or in bitsandbytes' float32 arithmetic), dequantization,
rows written group by group, and the squared error of a group under one (scale, zero point),
which the mse search measures candidates with.

Each numba kernel (``k_*``) has a numpy twin (``*_reference``) or is checked through
:func:`~gmse_cli.compress.scalar.quantize_reference`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba.core import types
from numba.extending import overload

from gmse_cli.compress.fpcast import k_fp_round
from gmse_cli.compress.grids import fp_round_reference
from gmse_cli.compress.scalar.plans import ASYM, FP, FULL, MIDRISE, SIGNED, TABLE, TABLE32, Plan
from gmse_cli.kernel_cache import numba, variant

SUM_BLOCK = 16  # squared errors added between two checks of the bound

# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def levels_reference(p: Plan, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Native level (q - z for asymmetric grids) of every scaled value ``v``."""
    n = p.n
    if p.grid == MIDRISE:
        h = v * (0.5 * (n - 1))
        j = np.minimum(np.floor(np.abs(h)), n // 2 - 1.0)
        return np.copysign((2.0 * j + 1.0) / (n - 1), h)
    if p.grid == SIGNED:
        return np.clip(np.rint(v), 1.0 - n // 2, n // 2 - 1.0)
    if p.grid == FULL:
        return np.clip(np.rint(v), -(n // 2), n // 2 - 1.0)
    if p.grid == ASYM:
        return np.clip(np.rint(v) + z, 0, n - 1) - z
    if p.grid == FP:
        return fp_round_reference(v, p.fp)
    return p.table[np.searchsorted(p.mids, v, side="right")]


def dequantize_reference(
    p: Plan, xg: np.ndarray, scale: np.ndarray, z: np.ndarray, deq: np.ndarray | None = None
) -> np.ndarray:
    """level * scale in float64 (0 where the scale is 0); scale and z broadcast over groups.
    ``deq``: a different scale to dequantize with (dq8), rounding still with ``scale``."""
    safe = np.where(scale > 0, scale, 1.0)
    if p.grid == TABLE32:
        # bitsandbytes: x times the float32 reciprocal, in float32; a midpoint goes down
        inv = (np.float32(1.0) / safe.astype(np.float32)).astype(np.float64)
        v = (xg * inv).astype(np.float32).astype(np.float64)
        level = p.table[np.searchsorted(p.mids, v, side="left")]
    else:
        level = levels_reference(p, xg / safe, z)
    return np.where(scale > 0, level * (scale if deq is None else deq), 0.0)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


# Every per-group helper works on 1-D slices of one row: indices that start at 0 let the
# compiler drop numba's negative-index wraparound and vectorize the loops. ``gr`` is the
# grid tuple (code, n, emin, mantissa bits, max value, midpoints, levels) of grid_args.


@numba.njit(cache=True, inline="always")
def k_level(v, z, grid, gr):
    """Native level of the scaled value v (q - z for asymmetric grids); ``grid`` is gr[0]."""
    n = gr[1]
    if grid == MIDRISE:
        h = v * (0.5 * (n - 1))
        j = min(np.floor(abs(h)), n // 2 - 1.0)
        return math.copysign((2.0 * j + 1.0) / (n - 1), h)
    if grid == SIGNED:
        return min(max(np.rint(v), 1.0 - n // 2), n // 2 - 1.0)
    if grid == FULL:
        return min(max(np.rint(v), -(n // 2) + 0.0), n // 2 - 1.0)
    if grid == ASYM:
        return min(max(np.rint(v) + z, 0.0), n - 1.0) - z
    if grid == FP:
        return k_fp_round(v, gr[2], gr[3], gr[4])
    k = 0  # searchsorted(mids, v, side="right"), by counting: no branches to mispredict
    for m in gr[5]:
        k += m <= v
    return gr[6][k]


@numba.njit(cache=True, inline="always")
def k_table_index(xg, s, mids, v, k):
    """k[j] = table index of the level nearest xg[j] / s (v[j]): the midpoints <= v counted
    one midpoint at a time over the whole group, a vectorizable loop instead of a search per
    entry. Same index as k_level's."""
    for j in range(xg.size):
        v[j] = np.float64(xg[j]) / s
        k[j] = 0
    for m in mids:
        for j in range(xg.size):
            k[j] += v[j] >= m


@numba.njit(cache=True, inline="always")
def k_table32_index(xg, s, mids, v, k):
    """k[j] = table index of xg[j] in bitsandbytes' arithmetic: v = float32(x * float32(1 /
    s)) (into v[j]), the midpoints below v counted (a value at a midpoint takes the lower
    level), one midpoint at a time over the whole group, as k_table_index. A scale below
    1 / FLT_MAX makes 1 / s infinite and a zero entry's v NaN, which counts above every
    midpoint, as numpy's and torch's searchsorted place it (the twins agree)."""
    inv = np.float32(1.0) / np.float32(s)
    for j in range(xg.size):
        v[j] = np.float64(np.float32(np.float32(xg[j]) * inv))
        k[j] = 0
    for m in mids:
        for j in range(xg.size):
            k[j] += not m >= v[j]  # m < v, and true for NaN


@numba.njit(cache=True, inline="always")
def k_sq_errors(xs, scale, z, grid, gr, sq, idx):
    """sq[j] = (x_hat - x)^2 for x = xs[j], masked or not, a scale > 0; idx: table index
    scratch. Inlined once per grid with a constant grid code (as k_write_row_grid), so the
    loops carry no branches and vectorize."""
    if grid == TABLE:
        k_table_index(xs, scale, gr[5], sq, idx)  # sq: the scaled values until overwritten
    if grid == TABLE32:
        k_table32_index(xs, scale, gr[5], sq, idx)
    for j in range(xs.size):
        v = np.float64(xs[j])
        table = grid == TABLE or grid == TABLE32
        level = gr[6][idx[j]] if table else k_level(v / scale, z, grid, gr)
        d = level * scale - v
        sq[j] = d * d


@numba.njit(cache=True, inline="always")
def k_error_below(xs, ms, has_mask, scale, z, grid, gr, bound, sq, idx):
    """Sum over kept entries of (x_hat - x)^2, in order, abandoned once it reaches ``bound``.

    The terms are nonnegative, so the partial sums never decrease: a partial sum >= bound
    (what is returned then) means the full sum is >= bound too. Below the bound, the full sum.
    The terms are computed first, into the scratch ``sq`` (``idx``: table indices) of at
    least xs.size entries, in loops the compiler vectorizes, then added in order. ``grid``
    (gr[0]) is a constant of the per-grid kernel this is inlined into, so only that grid's
    loop is compiled.
    """
    if not scale > 0:  # x_hat = 0
        for j in range(xs.size):
            sq[j] = np.float64(xs[j]) * np.float64(xs[j])
    else:
        k_sq_errors(xs, scale, z, grid, gr, sq, idx)
    # The bound is checked every SUM_BLOCK terms: a check per term would cost about as much
    # as the addition. Unsigned indices spare numba's negative-index wraparound.
    err, n, block = 0.0, np.uint64(xs.size), np.uint64(SUM_BLOCK)
    for start in range(np.uint64(0), n, block):
        for j in range(start, min(start + block, n)):
            err += sq[j] if not has_mask or ms[j] else 0.0
        if err >= bound:
            break
    return err


@numba.njit(cache=True, inline="always")
def k_write_row_grid(xs, ms, has_mask, os, g, scales, deq, zs, grid, gr):
    # The groups of one row: inlined once per grid, so each copy has a constant grid code
    # and the compiler drops the other grids' branches from the inner loop.
    for b in range(scales.size):
        s, d, z = scales[b], deq[b], zs[b]
        xg, og = xs[b * g : (b + 1) * g], os[b * g : (b + 1) * g]
        mg = ms[b * g : (b + 1) * g] if has_mask else ms
        if not s > 0:
            og[:] = 0.0
            continue
        for j in range(g):
            level = k_level(np.float64(xg[j]) / s, z, grid, gr)
            og[j] = level * d if not has_mask or mg[j] else 0.0


@numba.njit(cache=True, inline="always")
def k_write_row_table(xs, ms, has_mask, os, g, scales, deq, gr, bnb):
    """Table grids (lut, lloyd-max); ``bnb``: bitsandbytes' float32 arithmetic (TABLE32)."""
    table = gr[6]
    v, k = np.empty(g), np.empty(g, dtype=np.int64)
    for b in range(scales.size):
        s, d = scales[b], deq[b]
        xg, og = xs[b * g : (b + 1) * g], os[b * g : (b + 1) * g]
        mg = ms[b * g : (b + 1) * g] if has_mask else ms
        if not s > 0:
            og[:] = 0.0
            continue
        if bnb:
            k_table32_index(xg, s, gr[5], v, k)
        else:
            k_table_index(xg, s, gr[5], v, k)
        for j in range(g):
            og[j] = table[k[j]] * d if not has_mask or mg[j] else 0.0


@numba.njit(cache=True, inline="always")
def k_write_row(xs, ms, has_mask, os, g, scales, deq, zs, grid, gr):
    """Round one row, group b with scale scales[b] and zero point zs[b], then dequantize with
    deq[b] (the scale itself but for dq8); zero scale -> 0. ``grid`` (gr[0]) is a constant of
    the per-grid kernel this is inlined into: only that grid's loop is compiled."""
    if grid == TABLE32:
        k_write_row_table(xs, ms, has_mask, os, g, scales, deq, gr, True)
    elif grid == TABLE:
        k_write_row_table(xs, ms, has_mask, os, g, scales, deq, gr, False)
    else:
        k_write_row_grid(xs, ms, has_mask, os, g, scales, deq, zs, grid, gr)


def write_row_for(grid, xs, ms, has_mask, os, g, scales, deq, zs, gr):
    """:func:`k_write_row` on grid code ``grid``, a constant of the calling kernel, compiled as
    a function of its own (called from numba kernels only): only that grid's loop is compiled,
    and a parallel kernel's loop body stays small."""
    raise NotImplementedError("write_row_for is called from numba kernels only")


@functools.cache
def _write_row_kernel(grid: int):
    @numba.njit(cache=True)
    @variant(grid)
    def k_write_row_on(xs, ms, has_mask, os, g, scales, deq, zs, gr):  # pragma: no cover - compiled
        k_write_row(xs, ms, has_mask, os, g, scales, deq, zs, grid, gr)

    return k_write_row_on


@overload(write_row_for, prefer_literal=True)
def _write_row_for(grid, xs, ms, has_mask, os, g, scales, deq, zs, gr):
    # A dispatcher per grid, called through this overload (see mse_rule.mse_ratio_for).
    if not isinstance(grid, types.IntegerLiteral):
        return None
    kernel = _write_row_kernel(grid.literal_value)

    def impl(grid, xs, ms, has_mask, os, g, scales, deq, zs, gr):  # pragma: no cover - compiled
        kernel(xs, ms, has_mask, os, g, scales, deq, zs, gr)

    return impl


@numba.njit(cache=True, inline="always")
def k_mask_row(mask, has_mask, i):
    # Without a mask, a 1-element stand-in that is never read.
    return mask[i] if has_mask else mask[0]


@functools.cache
def write_groups_kernel(grid: int):
    """The parallel kernel that rounds rows group by group on grid code ``grid`` (one kernel
    per grid, each cached on disk: a format compiles its own grid's loop only)."""

    @numba.njit(cache=True, parallel=True)
    @variant(grid)
    def k_write_groups(x, mask, has_mask, out, g, scales, deq, zs, gr):
        for i in numba.prange(x.shape[0]):
            write_row_for(
                grid, x[i], k_mask_row(mask, has_mask, i), has_mask, out[i], g, scales[i], deq[i], zs[i], gr
            )

    return k_write_groups
