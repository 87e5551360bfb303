"""Scalar grids: their levels, floating-point rounding, and exact Gaussian quadrature.

A scalar quantizer is ``Q(x) = s * q(x / s)`` where ``q`` maps a number to the nearest level
of a fixed *native* grid (integers, ExMy floats, a lookup table, Lloyd-Max levels) and ``s``
is a scale. This module knows the native grids:

- :func:`fp_params`, :func:`fp_round_reference` -- an ExMy grid and rounding onto it (numpy);
  the compiled casts are in :mod:`~gmse_cli.compress.fpcast`, so that quadrature never loads
  numba.
- :func:`grid_levels`, :func:`grid_max`, :func:`grid_emax` -- the native levels of a stage.
- :func:`lloyd_max_levels` -- the Gaussian-MSE-optimal 2^b levels (Max, 1960).
- :func:`gaussian_mse` -- the exact E[(x - Q(x))^2] for x ~ N(0, 1) and a fixed scale, by
  closed-form integrals of the normal density over the decision cells.
- :func:`optimal_rms_constant` -- the scale (in units of RMS = 1) that minimizes it.
"""

from __future__ import annotations

import enum
import json
import math
from functools import cache
from typing import NamedTuple

import numpy as np

from gmse_cli.compress.normal import ndtri, normal_tail
from gmse_cli.errors import SpecError
from gmse_cli.memo import remembered
from gmse_cli.spec import FpStyle, GridKind, IntStyle, Overflow, Quantize, fp_max

__all__ = [
    "ALGORITHM_VERSION",
    "FpParams",
    "fp_params",
    "fp_round_reference",
    "overflow_value",
    "grid_levels",
    "grid_max",
    "grid_emax",
    "lloyd_max_levels",
    "lloyd_max_mse",
    "gaussian_mse",
    "optimal_rms_constant",
    "MAX_ENUMERATED_FP_BITS",
]

ALGORITHM_VERSION = 1
"""Bumped whenever what the grids compute changes (levels, casts, the optimal RMS constant);
part of the key of every stored GMSE (:mod:`gmse_cli.gmse.stored`), so none goes stale."""

MAX_ENUMERATED_FP_BITS = 16
"""FP grids up to this width (bf16, fp16) are enumerated; wider ones (fp32) are not."""

_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


# --------------------------------------------------------------------------------------------
# Floating-point grids
# --------------------------------------------------------------------------------------------


class FpParams(NamedTuple):
    """What rounding onto an ExMy grid needs (all values exact powers of two or finite)."""

    emin: int  # exponent of the smallest normal binade (1 - bias); subnormals share its step
    mantissa_bits: int
    max_value: float  # largest finite value; larger magnitudes saturate to it


@cache
def fp_params(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> FpParams:
    """Validated rounding parameters of an ExMy format."""
    if not 1 <= exponent_bits <= 8 or not 0 <= mantissa_bits <= 23:
        raise SpecError(
            f"fp grid e{exponent_bits}m{mantissa_bits}: need 1 <= exponent_bits <= 8 and "
            "0 <= mantissa_bits <= 23 (wider formats do not fit float32)"
        )
    style = FpStyle(style)
    if style is FpStyle.IEEE and exponent_bits < 2:
        # With one exponent bit the reserved all-ones exponent leaves no normal numbers.
        raise SpecError(
            f"fp grid e{exponent_bits}m{mantissa_bits}: fp_style 'ieee' needs exponent_bits >= 2 "
            "(use fp_style 'finite')"
        )
    if style is FpStyle.FN and mantissa_bits == 0:
        raise SpecError(
            f"fp grid e{exponent_bits}m0: fp_style 'fn' needs at least one mantissa bit"
        )
    bias = 2 ** (exponent_bits - 1) - 1
    return FpParams(1 - bias, mantissa_bits, fp_max(exponent_bits, mantissa_bits, style))


def fp_round_reference(v: np.ndarray, p: FpParams, over: float | None = None) -> np.ndarray:
    """Round float64 values to the ExMy grid: nearest, ties to even; a result beyond the
    largest finite value becomes ``over`` (of v's sign; None: the largest value, saturating).

    Every operation is exact except ``rint``: the step of v's binade is a power of two, so
    v / step and the product back are exact in float64 (steps lie in [2^-149, 2^127]).
    """
    _, ex = np.frexp(np.abs(v))  # |v| = m * 2^ex with m in [0.5, 1): floor(log2 |v|) = ex - 1
    step = np.ldexp(1.0, np.maximum(ex - 1, p.emin) - p.mantissa_bits)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(v / step) * step
    return np.where(np.abs(r) > p.max_value, np.copysign(p.max_value if over is None else over, v), r)


def overflow_value(p: FpParams, style: FpStyle, overflow: Overflow) -> float:
    """What a cast beyond the largest finite value gives (sign aside): the largest value when
    saturating; otherwise inf, or NaN for a format without inf (fp_style 'fn')."""
    if Overflow(overflow) is Overflow.SATURATE:
        return p.max_value
    return math.inf if FpStyle(style) is FpStyle.IEEE else math.nan


def _fp_positive_values(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> np.ndarray:
    """Every finite non-negative value of an ExMy format, from its codes."""
    p = fp_params(exponent_bits, mantissa_bits, style)
    codes = np.arange(2 ** (exponent_bits + mantissa_bits), dtype=np.int64)
    field, mant = codes >> mantissa_bits, codes & (2**mantissa_bits - 1)
    frac = mant / 2.0**mantissa_bits
    values = np.where(
        field == 0,
        np.ldexp(frac, p.emin),  # subnormals: 0.m * 2^emin
        np.ldexp(1.0 + frac, field - 1 + p.emin),  # normals: 1.m * 2^(field - bias)
    )
    return values[values <= p.max_value]  # drops inf/NaN codes of the ieee and fn styles


# --------------------------------------------------------------------------------------------
# Native levels of a stage
# --------------------------------------------------------------------------------------------


def _fp_stage_params(stage: Quantize) -> FpParams:
    assert stage.exponent_bits is not None and stage.mantissa_bits is not None
    return fp_params(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)


def grid_levels(stage: Quantize) -> np.ndarray:
    """The sorted native levels (float64) a stage rounds to, before scaling.

    int midrise: (2k + 1 - 2^b) / (2^b - 1); signed: -(2^(b-1) - 1) ... 2^(b-1) - 1; full:
    -2^(b-1) ... 2^(b-1) - 1; asymmetric: 0 ... 2^b - 1 (before the zero point); lut: its
    values; lloyd-max: the Gaussian-optimal levels; fp: every finite value (formats of at most
    16 bits).
    """
    if stage.grid is GridKind.INT:
        assert stage.bits is not None
        n = 2**stage.bits
        k = np.arange(n, dtype=np.float64)
        style = stage.resolved_int_style
        if style is IntStyle.MIDRISE:
            return (2 * k + 1 - n) / (n - 1)
        if style is IntStyle.SIGNED:
            return k[: n - 1] - (n // 2 - 1)
        if style is IntStyle.FULL:
            return k - n // 2
        return k
    if stage.grid is GridKind.LUT:
        assert stage.values is not None
        return np.array(stage.values, dtype=np.float64)
    if stage.grid is GridKind.LLOYD_MAX:
        assert stage.bits is not None
        return lloyd_max_levels(stage.bits).copy()
    assert stage.exponent_bits is not None and stage.mantissa_bits is not None
    width = 1 + stage.exponent_bits + stage.mantissa_bits
    if width > MAX_ENUMERATED_FP_BITS:
        raise SpecError(
            f"grid e{stage.exponent_bits}m{stage.mantissa_bits} has {width} bits; only fp grids of "
            f"at most {MAX_ENUMERATED_FP_BITS} bits are enumerated"
        )
    pos = _fp_positive_values(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
    return np.concatenate([-pos[:0:-1], pos])  # pos[0] is the single zero


def grid_max(stage: Quantize) -> float:
    """What absmax scaling maps amax to: the largest magnitude among the native levels, except
    for the full int grid, whose (2^b - 1) / 2 sits half a step inside its lowest level -2^(b-1)."""
    if stage.grid is GridKind.FP:
        return _fp_stage_params(stage).max_value
    if stage.grid is GridKind.INT:
        assert stage.bits is not None
        n = 2**stage.bits
        return {
            IntStyle.MIDRISE: 1.0,
            IntStyle.SIGNED: n / 2 - 1.0,
            IntStyle.ASYMMETRIC: n - 1.0,
            IntStyle.FULL: (n - 1) / 2,
        }[stage.resolved_int_style]
    return float(np.max(np.abs(grid_levels(stage))))


def grid_emax(stage: Quantize) -> int:
    """floor(log2(grid_max)): OCP MX's emax_elem (e2m1: 2, e4m3: 8, e5m2: 15, int8: 6)."""
    return math.frexp(grid_max(stage))[1] - 1


# --------------------------------------------------------------------------------------------
# Gaussian integrals over cells
# --------------------------------------------------------------------------------------------


def _phi(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        return np.where(np.isinf(t), 0.0, _INV_SQRT_2PI * np.exp(-0.5 * np.square(t)))


def _mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Phi(b) - Phi(a) for a <= b, from the tail masses beyond |a| and |b|: never a difference
    of near-ones, and one erfc per end."""
    tails = normal_tail(np.concatenate([a, b]))
    ta, tb = tails[: len(a)], tails[len(a) :]
    return np.where(a > 0, ta - tb, np.where(b <= 0, tb - ta, (1.0 - tb) - ta))


def _cell_moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrals of phi, x phi and x^2 phi over [a, b] (a, b may be infinite)."""
    pa, pb = _phi(a), _phi(b)
    m0 = _mass(a, b)
    m1 = pa - pb
    with np.errstate(invalid="ignore"):
        apa = np.where(np.isinf(a), 0.0, a * pa)
        bpb = np.where(np.isinf(b), 0.0, b * pb)
    return m0, m1, m0 - (bpb - apa)


def _cells(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-level decision cells [a_i, b_i] of sorted levels."""
    mid = 0.5 * (levels[:-1] + levels[1:])
    return np.concatenate([[-np.inf], mid]), np.concatenate([mid, [np.inf]])


def _relevant(
    levels: np.ndarray, scale: float, reach: float = 40.0, tiny: float = 1e-7
) -> np.ndarray:
    """The levels that matter to a Gaussian at this scale.

    Levels beyond 40 sigma own cells of mass < 1e-300: keep the innermost one on each side
    (its cell absorbs the tail) and drop the rest, which also keeps c^2 finite. On grids with
    a zero level, nonzero levels below 1e-7 (fp subnormals and low binades) are dropped too:
    their cells then round to 0 instead, changing the MSE by < 1e-20.
    """
    inside = np.flatnonzero(np.abs(levels * scale) <= reach)
    if inside.size == 0:
        return levels
    kept = levels[max(inside[0] - 1, 0) : inside[-1] + 2]
    if np.any(kept == 0):
        kept = kept[(np.abs(kept * scale) >= tiny) | (kept == 0)]
    return kept


def _levels_mse(levels: np.ndarray, scale: float) -> float:
    """E[(x - s*q(x/s))^2], q = nearest of ``levels``: sum of closed-form cell integrals."""
    c = _relevant(levels, scale) * scale
    m0, m1, m2 = _cell_moments(*_cells(c))
    return float(np.sum(m2 - 2.0 * c * m1 + c * c * m0))


def _levels_mse_slope(levels: np.ndarray, scale: float) -> float:
    """d/ds of :func:`_levels_mse`: -2 sum y_i (int_cell x phi - s y_i int_cell phi).

    The cell boundaries move with s too, but at a nearest-level boundary the two neighbouring
    errors are equal, so those terms cancel. No cancellation between large terms, unlike the
    MSE itself, so its root locates the optimum to ~1e-10 even for 8-bit grids.
    """
    y = _relevant(levels, scale)
    c = y * scale
    m0, m1, _ = _cell_moments(*_cells(c))
    return float(-2.0 * np.sum(y * (m1 - c * m0)))


def _fp_mse_by_binades(p: FpParams, scale: float) -> float:
    """Gaussian MSE of a fine fp grid (too wide to enumerate) from its binades.

    Within a binade the levels are uniform with step D, so the error is uniform on +-D/2 up to
    O(D^2) in the density's curvature: its mean square is D^2/12 times the binade's mass. The
    subnormal range is one more uniform region; beyond the largest value the error is exact.
    Relative accuracy ~2^-M, which is all an fp32-like grid needs.
    """
    top = math.frexp(p.max_value)[1] - 1  # binade of the largest value
    e = np.arange(p.emin, top + 1, dtype=np.float64)
    lo = np.concatenate([[0.0], np.exp2(e)])  # the subnormal region [0, 2^emin) first
    hi = np.minimum(np.concatenate([np.exp2(e[:1]), np.exp2(e + 1)]), p.max_value)
    step = np.exp2(np.concatenate([[p.emin], e]) - p.mantissa_bits)
    granular = 2.0 * np.sum(np.square(step * scale) / 12.0 * _mass(lo * scale, hi * scale))
    c = p.max_value * scale
    m0, m1, m2 = _cell_moments(np.array([c]), np.array([np.inf]))
    clipped = 2.0 * float((m2 - 2.0 * c * m1 + c * c * m0)[0])
    return float(granular) + clipped


def _check_fixed_scale_grid(stage: Quantize, what: str) -> None:
    if stage.grid is GridKind.INT and stage.resolved_int_style is IntStyle.ASYMMETRIC:
        raise SpecError(
            f"{what}: an asymmetric int grid has a data-dependent zero point and no fixed-scale "
            "Gaussian MSE (use int_style 'signed' or 'midrise', or Monte Carlo)"
        )


def gaussian_mse(stage: Quantize, scale: float) -> float:
    """Exact E[(x - Q(x))^2] for x ~ N(0, 1), Q(x) = scale * (nearest native level to x/scale).

    Nearest-level rounding is what every grid here does (fp: RNE with saturation; ints:
    nearest, clamped; lut, lloyd-max: nearest), ties having probability zero. The sum of
    closed-form integrals in Phi and phi over the decision cells; fp grids wider than
    :data:`MAX_ENUMERATED_FP_BITS` (fp32) use :func:`_fp_mse_by_binades` instead.
    """
    _check_fixed_scale_grid(stage, "gaussian_mse")
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SpecError(f"gaussian_mse: scale={scale!r} must be a positive finite number")
    return _grid_mse(_grid_key(stage), value)


# A grid key: the grid a stage rounds onto, without its scale rule, group or scale format
# (what the cached quadrature and optimal constants depend on), as a hashable tuple.
_GridKey = tuple


def _grid_key(stage: Quantize) -> _GridKey:
    if stage.grid is GridKind.FP:
        return (GridKind.FP, stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
    if stage.grid is GridKind.INT:
        return (GridKind.INT, stage.bits, stage.resolved_int_style)
    if stage.grid is GridKind.LUT:
        return (GridKind.LUT, stage.values)
    return (GridKind.LLOYD_MAX, stage.bits)


def _key_stage(key: _GridKey) -> Quantize:
    kind = key[0]
    if kind is GridKind.FP:
        return Quantize(grid=kind, exponent_bits=key[1], mantissa_bits=key[2], fp_style=key[3])
    if kind is GridKind.INT:
        return Quantize(grid=kind, bits=key[1], int_style=key[2])
    if kind is GridKind.LUT:
        return Quantize(grid=kind, values=key[1])
    return Quantize(grid=kind, bits=key[1])


def _enumerable(key: _GridKey) -> bool:
    return key[0] is not GridKind.FP or 1 + key[1] + key[2] <= MAX_ENUMERATED_FP_BITS


@cache
def _key_levels(key: _GridKey) -> np.ndarray:
    levels = grid_levels(_key_stage(key))
    levels.flags.writeable = False
    return levels


def _grid_mse(key: _GridKey, scale: float) -> float:
    if _enumerable(key):
        return _levels_mse(_key_levels(key), scale)
    return _fp_mse_by_binades(fp_params(key[1], key[2], key[3]), scale)


# --------------------------------------------------------------------------------------------
# Optimal scale
# --------------------------------------------------------------------------------------------

_CLIP_RANGE = (0.05, 20.0)  # where the largest level may sit, in units of sigma
_CLIP_POINTS = 241  # ~2.5% apart: finer than the spacing of distinct local minima
_FINE_GRID_LEVELS = 4096  # grids with more levels (int16, fp16) have only shallow ripples ...
_FINE_GRID_POINTS = 61  # ... so a coarser scan finds the basin at a quarter of the cost
_TIED_MSE = 1e-12  # relative: minima this close are equal (the quadrature's own precision is ~1e-14)
_REFINED_MINIMA = 3  # coarse grids (fp4, luts) have several local minima; refine the best few


def optimal_rms_constant(stage: Quantize) -> float:
    """argmin over c of :func:`gaussian_mse` (stage, c): the best scale for RMS = 1.

    A log-spaced search of the position of the largest level (0.05 to 20 sigma), then each of
    the best few local minima refined: by a root of the exact slope bracketed by the search's
    neighbouring points (enumerable grids), or a bounded Brent search (fp32-like grids). Minima
    that tie (to 1e-12 relative: e5m2's, a factor 2 apart) resolve to the largest constant. Each
    grid is searched once per machine and remembered (:mod:`gmse_cli.memo`).
    """
    _check_fixed_scale_grid(stage, "optimal_rms_constant")
    return _optimal_constant(_grid_key(stage))


@cache
def _optimal_constant(key: _GridKey) -> float:
    # A pure function of the grid (and this module's version), searched once per machine.
    plain = [k.value if isinstance(k, enum.Enum) else k for k in key]
    text = json.dumps({"grids": ALGORITHM_VERSION, "grid": plain, "ties": "largest"}, sort_keys=True)
    return remembered("optimal-rms", text, lambda: _search_optimal_constant(key))


def _search_optimal_constant(key: _GridKey) -> float:
    top = grid_max(_key_stage(key))
    fine = _enumerable(key) and len(_key_levels(key)) > _FINE_GRID_LEVELS
    c = np.geomspace(*_CLIP_RANGE, _FINE_GRID_POINTS if fine else _CLIP_POINTS) / top
    mse = np.array([_grid_mse(key, float(ci)) for ci in c])
    interior = np.flatnonzero((mse[1:-1] <= mse[:-2]) & (mse[1:-1] <= mse[2:])) + 1
    candidates = interior[np.argsort(mse[interior])][:_REFINED_MINIMA]
    if len(candidates) == 0:
        candidates = np.array([int(np.argmin(mse))])
    found = [(float(c[int(np.argmin(mse))]), float(np.min(mse)))]
    for i in candidates:
        lo, hi = float(c[max(i - 1, 0)]), float(c[min(i + 1, len(c) - 1)])
        ci = _refine(key, lo, hi)
        found.append((ci, _grid_mse(key, ci)))
    # A grid of many binades (e5m2) is nearly scale-free: minima a factor 2 apart tie to rounding,
    # and which one wins would be rounding noise, differing between machines. Take the largest of
    # the tied: it clips real weights' outliers least.
    best_mse = min(m for _, m in found)
    return max(ci for ci, m in found if m <= best_mse * (1 + _TIED_MSE))


def _refine(key: _GridKey, lo: float, hi: float) -> float:
    from scipy import optimize

    if _enumerable(key):
        levels = _key_levels(key)
        f_lo, f_hi = _levels_mse_slope(levels, lo), _levels_mse_slope(levels, hi)
        if f_lo < 0 < f_hi:
            return float(
                optimize.brentq(
                    lambda s: _levels_mse_slope(levels, s), lo, hi, xtol=1e-15, rtol=1e-13
                )
            )
    res = optimize.minimize_scalar(
        lambda s: _grid_mse(key, s),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12 * hi},
    )
    return float(res.x)


# --------------------------------------------------------------------------------------------
# Lloyd-Max
# --------------------------------------------------------------------------------------------


def lloyd_max_levels(bits: int, *, tol: float = 1e-12, max_iter: int = 200) -> np.ndarray:
    """The Gaussian-MSE-optimal 2^bits levels (Lloyd-Max), sorted, read-only, cached.

    Solves Lloyd's fixed point -- each level is the centroid E[x | cell] of its cell, cells
    split at midpoints -- with exact Gaussian integrals. Plain Lloyd iteration contracts
    slowly for many levels (ratio ~1 - O(4^-b)), so each step is a Newton step on the
    fixed-point equations (the centroid map's Jacobian is tridiagonal) until the largest
    change is below ``tol``. Levels are symmetric; the positive half is solved. Up to 8 bits
    (the lloyd-max grids) the Newton system is solved dense; 9 to 16 bits (1-D VQ codebooks)
    with a banded solver.
    """
    if not 1 <= bits <= 16:
        raise SpecError(f"lloyd_max_levels: bits={bits} is outside the supported 1..16")
    if not tol > 0:
        raise SpecError(f"lloyd_max_levels: tol={tol} must be positive")
    return _lloyd_max_levels(bits, tol, max_iter)


def lloyd_max_mse(bits: int) -> float:
    """Exact Gaussian MSE of :func:`lloyd_max_levels` (``bits`` 1..16) at scale 1."""
    return _levels_mse(lloyd_max_levels(bits), 1.0)


@cache
def _lloyd_max_levels(bits: int, tol: float, max_iter: int) -> np.ndarray:
    n = 2**bits
    half = n // 2
    # Start from Panter-Dite companding (level density ~ phi^(1/3), i.e. quantiles of N(0, 3)).
    y = math.sqrt(3.0) * np.array([ndtri(0.5 + (i + 0.5) / n) for i in range(half)])
    for _ in range(max_iter):
        g, jac = _centroids(y)
        # Newton on F(y) = g(y) - y: (J - I) dy = -(g - y); J is tridiagonal (banded form).
        step = _tridiagonal_solve(jac, y - g)
        y = y + step
        # Above 8 bits the centroids' rounding (a ratio of tiny cell integrals) leaves steps of
        # ~1e-5 of the narrowest cell that never shrink: stop there (Newton's next step would be
        # far smaller still), while 8 bits and fewer converge to ``tol`` as before.
        limit = tol if half <= _DENSE_NEWTON_MAX else max(tol, 1e-4 * float(np.min(np.diff(y, prepend=0.0))))
        if np.max(np.abs(step)) < limit:
            break
    else:
        raise RuntimeError(f"Lloyd-Max for {bits} bits did not converge in {max_iter} Newton steps")
    levels = np.concatenate([-y[::-1], y])
    levels.flags.writeable = False
    return levels


_DENSE_NEWTON_MAX = 128  # half-grids up to 8 bits: solved dense, without importing scipy.linalg


def _tridiagonal_solve(jac: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve (J - I) x = rhs, J tridiagonal in the banded form of :func:`_centroids`."""
    banded = jac.copy()
    banded[1] -= 1.0
    if len(rhs) <= _DENSE_NEWTON_MAX:
        dense = np.diag(banded[1]) + np.diag(banded[0, 1:], 1) + np.diag(banded[2, :-1], -1)
        return np.linalg.solve(dense, rhs)
    # 512 levels and more (1-D VQ codebooks): a dense solve would cost O(K^3)
    from scipy.linalg import solve_banded

    return solve_banded((1, 1), banded, rhs)


def _centroids(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell centroids of the positive half-grid ``y`` and the centroid map's banded Jacobian."""
    t = np.concatenate([[0.0], 0.5 * (y[:-1] + y[1:]), [np.inf]])
    a, b = t[:-1], t[1:]
    m0, m1, _ = _cell_moments(a, b)
    g = m1 / m0
    # d g_i / d a = phi(a)(g - a)/m0, d g_i / d b = phi(b)(b - g)/m0 (b = inf: 0); the
    # boundary at 0 is fixed by symmetry, each inner boundary moves by half of each level.
    dga = np.where(a > 0, _phi(a) * (g - a) / m0, 0.0)
    with np.errstate(invalid="ignore"):
        dgb = np.where(np.isinf(b), 0.0, _phi(b) * (b - g) / m0)
    jac = np.zeros((3, len(y)))
    jac[0, 1:] = 0.5 * dgb[:-1]  # d g_i / d y_{i+1}
    jac[1] = 0.5 * (dga + dgb)  # d g_i / d y_i
    jac[2, :-1] = 0.5 * dga[1:]  # d g_i / d y_{i-1}
    return g, jac
