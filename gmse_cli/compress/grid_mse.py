"""A scalar grid's exact Gaussian MSE at a fixed scale, and the scale that minimizes it.

- :func:`gaussian_mse` -- the exact E[(x - Q(x))^2] for x ~ N(0, 1) and a fixed scale, by
  closed-form integrals of the normal density over the decision cells
  (:mod:`~gmse_cli.compress.gaussian_cells`).
- :func:`optimal_rms_constant` -- the scale (in units of RMS = 1) that minimizes it.
"""

from __future__ import annotations

import enum
import json
import math
from functools import lru_cache

import numpy as np

from gmse_cli.compress.gaussian_cells import cell_moments, levels_mse, levels_mse_slope, normal_mass
from gmse_cli.compress.grids import (
    ALGORITHM_VERSION,
    MAX_ENUMERATED_FP_BITS,
    FpParams,
    fp_params,
    grid_levels,
    grid_max,
)
from gmse_cli.errors import SpecError
from gmse_cli.limits import MEMO_ENTRIES
from gmse_cli.memo import remembered
from gmse_cli.spec import GridKind, IntStyle, Quantize, ScaleRule

__all__ = ["gaussian_mse", "optimal_rms_constant", "gaussian_scale_constant"]

GAUSSIAN_ABS_MEAN = math.sqrt(2 / math.pi)
"""E|x| for x ~ N(0, 1): the absmean statistic of an infinite Gaussian row."""


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
    granular = 2.0 * np.sum(np.square(step * scale) / 12.0 * normal_mass(lo * scale, hi * scale))
    c = p.max_value * scale
    m0, m1, m2 = cell_moments(np.array([c]), np.array([np.inf]))
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


@lru_cache(maxsize=64)  # an int16 grid's levels take 0.5 MiB
def _key_levels(key: _GridKey) -> np.ndarray:
    levels = grid_levels(_key_stage(key))
    levels.flags.writeable = False
    return levels


def _grid_mse(key: _GridKey, scale: float) -> float:
    if _enumerable(key):
        return levels_mse(_key_levels(key), scale)
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


def gaussian_scale_constant(stage: Quantize) -> float:
    """The scale that ``stage``'s rms or absmean rule gives an infinite N(0, 1) row (the
    statistic's limit): rms, its constant (the optimal one unless given); absmean, its
    constant (1 unless given) times E|x| = sqrt(2 / pi)."""
    if stage.scale is ScaleRule.ABSMEAN:
        return (1.0 if stage.scale_constant is None else stage.scale_constant) * GAUSSIAN_ABS_MEAN
    if stage.scale is not ScaleRule.RMS:
        raise SpecError(f"gaussian_scale_constant: scale '{stage.scale}' has no fixed Gaussian scale")
    return stage.scale_constant or optimal_rms_constant(stage)


@lru_cache(maxsize=MEMO_ENTRIES)
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
        f_lo, f_hi = levels_mse_slope(levels, lo), levels_mse_slope(levels, hi)
        if f_lo < 0 < f_hi:
            return float(
                optimize.brentq(
                    lambda s: levels_mse_slope(levels, s), lo, hi, xtol=1e-15, rtol=1e-13
                )
            )
    res = optimize.minimize_scalar(
        lambda s: _grid_mse(key, s),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12 * hi},
    )
    return float(res.x)
