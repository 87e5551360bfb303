"""Lloyd-Max levels: the 2^b levels with the least Gaussian MSE (Max, 1960)."""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from gmse_cli.compress.gaussian_cells import cell_moments, levels_mse, phi
from gmse_cli.compress.normal import ndtri
from gmse_cli.errors import SpecError

__all__ = ["lloyd_max_levels", "lloyd_max_mse"]


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
    return levels_mse(lloyd_max_levels(bits), 1.0)


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
    m0, m1, _ = cell_moments(a, b)
    g = m1 / m0
    # d g_i / d a = phi(a)(g - a)/m0, d g_i / d b = phi(b)(b - g)/m0 (b = inf: 0); the
    # boundary at 0 is fixed by symmetry, each inner boundary moves by half of each level.
    dga = np.where(a > 0, phi(a) * (g - a) / m0, 0.0)
    with np.errstate(invalid="ignore"):
        dgb = np.where(np.isinf(b), 0.0, phi(b) * (b - g) / m0)
    jac = np.zeros((3, len(y)))
    jac[0, 1:] = 0.5 * dgb[:-1]  # d g_i / d y_{i+1}
    jac[1] = 0.5 * (dga + dgb)  # d g_i / d y_i
    jac[2, :-1] = 0.5 * dga[1:]  # d g_i / d y_{i-1}
    return g, jac
