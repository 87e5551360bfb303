"""The mse scale rule: the clipping ratio r (scale = r times the absmax scale) with the least
squared error, over a coarse and then a fine pass of ratios (the package docstring gives them).

Candidates are measured with their stored scale for the per-group formats and with the float32
raw scale for the two-level ones. The kernel skips candidates that cannot win, which changes
no result (see :func:`k_mse_ratio`); the numpy twin measures every one.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba.core import types
from numba.extending import overload

from gmse_cli.compress.scalar.plans import ASYM, FP32, GLOBAL_FORMATS, Plan, scale_args
from gmse_cli.compress.scalar.rounding import dequantize_reference, k_error_below, k_mask_row
from gmse_cli.compress.scalar.scales import (
    k_store_local,
    k_zero_point,
    ordered_sum,
    store_local_reference,
    zero_point_reference,
)
from gmse_cli.kernel_cache import numba, variant

# The mse rule's clipping ratios: a coarse pass 1.00, 0.99, ..., 0.20, then a fine pass of
# steps of 0.001 around the best coarse ratio (GPTQ searches the same range in 100 steps).
MSE_COARSE = 81
MSE_COARSE_STEP = 0.01
MSE_FINE = 9
MSE_FINE_STEP = 0.001
MSE_MIN_RATIO = 0.2

# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def group_error_reference(
    p: Plan, xg: np.ndarray, kg: np.ndarray, scale: np.ndarray, z: np.ndarray
) -> np.ndarray:
    err = np.where(
        kg, np.square(dequantize_reference(p, xg, scale[..., None], z[..., None]) - xg), 0.0
    )
    err = ordered_sum(err, axis=-1)  # (rows, groups per row)
    return ordered_sum(err, axis=0)[None] if p.tensor else err


def mse_candidate_reference(
    p: Plan, ratio: np.ndarray, stats: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(scale the error is measured with, zero point) for clipping ratio ``ratio``."""
    base = (stats["hi"] - stats["lo"]) / (p.n - 1) if p.grid == ASYM else stats["amax"] / p.gmax
    scale = store_local_reference(p, ratio * base, stats["amax"])
    return scale, zero_point_reference(p, ratio * stats["lo"], scale)


def mse_ratio_reference(
    p: Plan, xg: np.ndarray, kg: np.ndarray, stats: dict[str, np.ndarray]
) -> np.ndarray:
    shape = stats["amax"].shape
    best_r, best_err = np.full(shape, np.nan), np.full(shape, np.inf)
    for k in range(MSE_COARSE):
        r = np.full(shape, 1.0 - MSE_COARSE_STEP * k)
        err = group_error_reference(p, xg, kg, *mse_candidate_reference(p, r, stats))
        better = err < best_err
        best_r, best_err = np.where(better, r, best_r), np.where(better, err, best_err)
    coarse = best_r
    for j in range(-MSE_FINE, MSE_FINE + 1):
        if j == 0:
            continue
        r = coarse + MSE_FINE_STEP * j
        err = group_error_reference(p, xg, kg, *mse_candidate_reference(p, r, stats))
        better = (err < best_err) & (r >= MSE_MIN_RATIO) & (r <= 1.0)
        best_r, best_err = np.where(better, r, best_r), np.where(better, err, best_err)
    return best_r


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def k_candidate(r, amax, lo, hi, st, asym, n, gmax):
    """(scale, zero point) the mse rule measures clipping ratio r with (``st``: the scale
    tuple it is stored by)."""
    base = (hi - lo) / (n - 1) if asym else amax / gmax
    scale = k_store_local(r * base, amax, st)
    return scale, k_zero_point(r * lo, scale, asym, n)


@numba.njit(cache=True, inline="always")
def k_coarse_candidate(k, amax, lo, hi, st, asym, n, gmax):
    """(scale, zero point) of coarse ratio number k; NaNs, equal to nothing, out of range."""
    if k < 0 or k >= MSE_COARSE:
        return np.nan, np.nan
    return k_candidate(1.0 - MSE_COARSE_STEP * k, amax, lo, hi, st, asym, n, gmax)


@numba.njit(cache=True, inline="always")
def k_mse_ratio(xs, ms, has_mask, amax, lo, hi, st, grid, gr, gmax, sq, idx):
    """The best clipping ratio, as trying every ratio in order finds it (first best wins,
    strict <), skipping work that cannot change the outcome: a candidate whose (scale, zero
    point) repeats one met before has the same error, so it cannot win and is not measured;
    a measurement stops once its partial error reaches the best so far (k_error_below).

    Which repeats are looked for: the stored scale is monotone in the ratio, and so is the
    zero point for a fixed scale, so equal candidates are adjacent in ratio order. In the
    coarse pass the previous candidate is the only one to compare with; a fine ratio lies
    strictly between the coarse neighbours of the best coarse ratio, so it can only repeat
    one of those three or the previous fine candidate.

    ``grid`` (gr[0]) is a constant of the per-grid kernel this is inlined into: only that
    grid's error loop is compiled.
    """
    asym, n = grid == ASYM, gr[1]
    best_r, best_err, best_k = np.nan, np.inf, -1
    coarse, prev_s, prev_z = np.nan, np.nan, np.nan
    # The fine pass's coarse neighbours of the best coarse ratio; NaNs equal nothing.
    up_s, up_z, at_s, at_z, down_s, down_z = np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    # Both passes in one loop, so that the (inlined) error measurement is compiled once.
    for k in range(MSE_COARSE + 2 * MSE_FINE):
        if k < MSE_COARSE:
            r = 1.0 - MSE_COARSE_STEP * k
        else:
            if k == MSE_COARSE:
                coarse, prev_s, prev_z = best_r, np.nan, np.nan
                up_s, up_z = k_coarse_candidate(best_k - 1, amax, lo, hi, st, asym, n, gmax)
                at_s, at_z = k_coarse_candidate(best_k, amax, lo, hi, st, asym, n, gmax)
                down_s, down_z = k_coarse_candidate(best_k + 1, amax, lo, hi, st, asym, n, gmax)
            j = k - MSE_COARSE - MSE_FINE  # fine steps -MSE_FINE ... MSE_FINE, 0 left out
            j += j >= 0
            r = coarse + MSE_FINE_STEP * j
            if r < MSE_MIN_RATIO or r > 1.0:
                continue
        s, z = k_candidate(r, amax, lo, hi, st, asym, n, gmax)
        repeat = (
            (s == prev_s and z == prev_z)
            or (s == at_s and z == at_z)
            or (s == up_s and z == up_z)
            or (s == down_s and z == down_z)
        )
        prev_s, prev_z = s, z
        if repeat:
            continue
        err = k_error_below(xs, ms, has_mask, s, z, grid, gr, best_err, sq, idx)
        if err < best_err:
            best_r, best_err, best_k = r, err, k
    return best_r


def mse_ratio_for(grid, xs, ms, has_mask, amax, lo, hi, st, gr, gmax, sq, idx):
    """:func:`k_mse_ratio` on grid code ``grid``, a constant of the calling kernel, compiled
    as a function of its own (called from numba kernels only): only that grid's error loop is
    compiled, and a parallel kernel's loop body stays small (numba's parfor passes take
    several seconds over an inlined search)."""
    raise NotImplementedError("mse_ratio_for is called from numba kernels only")


@functools.cache
def _mse_ratio_kernel(grid: int):
    @numba.njit(cache=True)
    @variant(grid)
    def k_mse_ratio_on(xs, ms, has_mask, amax, lo, hi, st, gr, gmax, sq, idx):  # pragma: no cover - compiled
        return k_mse_ratio(xs, ms, has_mask, amax, lo, hi, st, grid, gr, gmax, sq, idx)

    return k_mse_ratio_on


@overload(mse_ratio_for, prefer_literal=True)
def _mse_ratio_for(grid, xs, ms, has_mask, amax, lo, hi, st, gr, gmax, sq, idx):
    # A dispatcher per grid (compiled once per signature: numba types a parallel loop's body
    # twice, and an overload's own impl would compile twice), called through this overload so
    # that the calling kernel's closure holds no dispatcher (which would change its cache key
    # in every process).
    if not isinstance(grid, types.IntegerLiteral):
        return None
    kernel = _mse_ratio_kernel(grid.literal_value)

    def impl(grid, xs, ms, has_mask, amax, lo, hi, st, gr, gmax, sq, idx):  # pragma: no cover - compiled
        return kernel(xs, ms, has_mask, amax, lo, hi, st, gr, gmax, sq, idx)

    return impl


@functools.cache
def tensor_errors_kernel(grid: int):
    """The parallel kernel measuring mse candidates over a whole tensor on grid code ``grid``
    (one kernel per grid, each cached on disk)."""

    @numba.njit(cache=True, parallel=True)
    @variant(grid)
    def k_tensor_errors(x, mask, has_mask, scales, zs, gr):
        """Squared error of the whole tensor for each candidate (scale, zero point): rows in
        parallel, then each candidate's row sums added in row order (the reference's order)."""
        rows, k = x.shape[0], scales.size
        per_row = np.empty((rows, k))
        for i in numba.prange(rows):
            m_row = k_mask_row(mask, has_mask, i)
            sq, idx = np.empty(x.shape[1]), np.empty(x.shape[1], dtype=np.int64)
            for c in range(k):
                per_row[i, c] = k_error_below(
                    x[i], m_row, has_mask, scales[c], zs[c], grid, gr, np.inf, sq, idx
                )
        total = np.zeros(k)
        for i in range(rows):
            for c in range(k):
                total[c] += per_row[i, c]
        return total

    return k_tensor_errors


def tensor_mse_ratio(
    p: Plan, x: np.ndarray, m: np.ndarray, has_mask: bool, gr: tuple,
    amax: float, lo: float, hi: float,
) -> float:
    """The mse rule's clipping ratio of a tensor-wide group (statistics ``amax``, ``lo``, ``hi``),
    each pass's candidates measured in one parallel sweep over the rows."""
    asym = p.grid == ASYM
    st = scale_args(p, FP32 if p.sfmt in GLOBAL_FORMATS else None)

    measured: set[tuple[float, float]] = set()

    def best_of(ratios: list[float], best: tuple[float, float]) -> tuple[float, float]:
        # Candidates in one pass over the tensor; a repeated (scale, zero point) cannot
        # win (first best wins), so it is measured once (see k_mse_ratio).
        cands: dict[float, tuple[float, float]] = {}
        for c in ratios:
            pair = k_candidate(c, amax, lo, hi, st, asym, p.n, p.gmax)
            if pair not in measured:
                measured.add(pair)
                cands[c] = pair
        scales, zs = (np.array([pair[i] for pair in cands.values()]) for i in (0, 1))
        errs = tensor_errors_kernel(p.grid)(x, m, has_mask, scales, zs, gr)
        for c, e in zip(cands, errs, strict=True):
            if e < best[1]:
                best = (c, float(e))
        return best

    coarse = best_of(
        [1.0 - MSE_COARSE_STEP * k for k in range(MSE_COARSE)], (math.nan, math.inf)
    )
    fine = [coarse[0] + MSE_FINE_STEP * j for j in range(-MSE_FINE, MSE_FINE + 1) if j != 0]
    return best_of([c for c in fine if MSE_MIN_RATIO <= c <= 1.0], coarse)[0]
