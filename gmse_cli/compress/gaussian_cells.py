"""Exact Gaussian integrals over the decision cells of a set of levels.

The error of rounding x ~ N(0, 1) to the nearest of sorted levels is a sum over the cells
between midpoints of closed-form integrals of phi, x phi and x^2 phi: no numerical quadrature.
Used by the grids' Gaussian MSE (:mod:`~gmse_cli.compress.grid_mse`) and the Lloyd-Max levels
(:mod:`~gmse_cli.compress.lloyd_max`).
"""

from __future__ import annotations

import numpy as np

from gmse_cli.compress.normal import normal_tail

__all__ = ["phi", "normal_mass", "cell_moments", "nearest_cells", "relevant_levels", "levels_mse",
           "levels_mse_slope"]

_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def phi(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        return np.where(np.isinf(t), 0.0, _INV_SQRT_2PI * np.exp(-0.5 * np.square(t)))


def normal_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Phi(b) - Phi(a) for a <= b, from the tail masses beyond |a| and |b|: never a difference
    of near-ones, and one erfc per end."""
    tails = normal_tail(np.concatenate([a, b]))
    ta, tb = tails[: len(a)], tails[len(a) :]
    return np.where(a > 0, ta - tb, np.where(b <= 0, tb - ta, (1.0 - tb) - ta))


def cell_moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrals of phi, x phi and x^2 phi over [a, b] (a, b may be infinite)."""
    pa, pb = phi(a), phi(b)
    m0 = normal_mass(a, b)
    m1 = pa - pb
    with np.errstate(invalid="ignore"):
        apa = np.where(np.isinf(a), 0.0, a * pa)
        bpb = np.where(np.isinf(b), 0.0, b * pb)
    return m0, m1, m0 - (bpb - apa)


def nearest_cells(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-level decision cells [a_i, b_i] of sorted levels."""
    mid = 0.5 * (levels[:-1] + levels[1:])
    return np.concatenate([[-np.inf], mid]), np.concatenate([mid, [np.inf]])


def relevant_levels(
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


def levels_mse(levels: np.ndarray, scale: float) -> float:
    """E[(x - s*q(x/s))^2], q = nearest of ``levels``: sum of closed-form cell integrals."""
    c = relevant_levels(levels, scale) * scale
    m0, m1, m2 = cell_moments(*nearest_cells(c))
    return float(np.sum(m2 - 2.0 * c * m1 + c * c * m0))


def levels_mse_slope(levels: np.ndarray, scale: float) -> float:
    """d/ds of :func:`levels_mse`: -2 sum y_i (int_cell x phi - s y_i int_cell phi).

    The cell boundaries move with s too, but at a nearest-level boundary the two neighbouring
    errors are equal, so those terms cancel. No cancellation between large terms, unlike the
    MSE itself, so its root locates the optimum to ~1e-10 even for 8-bit grids.
    """
    y = relevant_levels(levels, scale)
    c = y * scale
    m0, m1, _ = cell_moments(*nearest_cells(c))
    return float(-2.0 * np.sum(y * (m1 - c * m0)))
