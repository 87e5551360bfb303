"""The normal, chi-square and binomial distribution functions that exact GMSEs need, without
scipy.

Importing ``scipy.special`` costs 0.12-0.17 s (its array-API layer), more than all the
quadratures of the catalog's exact formats together, so the few functions they use are here:
elementwise libm ``erf``/``erfc`` for the normal CDF, stdlib ``statistics`` for its inverse,
and short series and recursions for the rest. Each keeps the digits where its value is tiny
(tails, small arguments); ``tests/test_normal.py`` checks them against scipy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["binomial_cdf", "chi2_cdf", "erfinv", "ndtri", "normal_tail"]

_erfc = np.frompyfunc(math.erfc, 1, 1)
_SQRT_HALF = math.sqrt(0.5)


def normal_tail(x: np.ndarray) -> np.ndarray:
    """P(Z > |x|) for a standard normal Z, elementwise, with full relative precision however
    small (so Phi(x) is this for x < 0 and one minus it above)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * np.asarray(_erfc(_SQRT_HALF * np.abs(x)), dtype=np.float64)


def ndtri(p: float) -> float:
    """Phi^-1(p) for 0 < p < 1 (Wichura's AS241, as in the standard library: ~1e-16 relative)."""
    import statistics  # 3.5 ms to import, which only magnitude pruning and Lloyd-Max need

    return statistics.NormalDist().inv_cdf(p)


def erfinv(y: float) -> float:
    """The inverse of erf on (-1, 1): Newton's method on libm's erf from the inverse normal CDF
    (which alone would lose the digits of a small ``y`` in ``(1 + y) / 2``)."""
    if y == 0.0:
        return 0.0
    if not -1.0 < y < 1.0:
        raise ValueError(f"erfinv: {y} is outside (-1, 1)")
    x = -_SQRT_HALF * ndtri((1.0 - abs(y)) / 2.0)
    for _ in range(3):  # quadratic convergence from ~1e-16 * (1 / |y|) relative
        x -= (math.erf(x) - abs(y)) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return math.copysign(x, y)


def chi2_cdf(k: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q): the chi-square distribution with ``k`` degrees of freedom, CDF and survival at
    ``x >= 0`` -- the regularized incomplete gamma functions at a = k / 2 and x / 2.

    Below a + 1, P by its power series (positive terms: relative precision where P is tiny);
    elsewhere Q by the upward recursion Q(a + 1) = Q(a) + z^a e^-z / Gamma(a + 1) from
    Q(1/2) = erfc(sqrt z) or Q(1) = e^-z (positive terms again). The other is one minus it.
    """
    if k < 1:
        raise ValueError(f"chi2_cdf: k={k} degrees of freedom must be at least 1")
    a = k / 2.0
    z = 0.5 * np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        log_z = np.log(z)
        low = z < a + 1.0
        # series: P = z^a e^-z / Gamma(a + 1) * sum_n z^n / ((a + 1) ... (a + n))
        zs = np.where(low, z, 0.0)
        term = np.ones_like(zs)
        total = np.ones_like(zs)
        n = 0
        while np.any(term > 1e-17 * total):  # terms ~ exp(-n^2 / 2a) at z = a: ~9 sqrt(a) of them
            n += 1
            term *= zs / (a + n)
            total += term
        lead = np.where(z > 0, np.exp(a * log_z - z - math.lgamma(a + 1.0)), 0.0)
        p_series = lead * total
        # recursion for Q
        q = np.asarray(_erfc(np.sqrt(z)), dtype=np.float64) if k % 2 else np.exp(-z)
        for step in range(k // 2 - 1 if k % 2 == 0 else k // 2):
            b = (1.0 if k % 2 == 0 else 0.5) + step  # Q(b) -> Q(b + 1)
            q = q + np.where(z > 0, np.exp(b * log_z - z - math.lgamma(b + 1.0)), 0.0)
    p = np.where(low, p_series, 1.0 - q)
    return p, np.where(low, 1.0 - p_series, q)


def binomial_cdf(k: int, n: int, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P[Binomial(n, p) <= k] elementwise, given both ``p`` and ``q = 1 - p`` (each with its
    own digits where it is tiny): the sum of the first k + 1 probabilities, in logs so that
    neither C(n, j) nor the powers overflow or underflow early."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if k < 0:
        return np.zeros_like(p)
    if k >= n:
        return np.ones_like(p)
    total = np.zeros_like(p)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        log_p, log_q = np.log(p), np.log(q)
        for j in range(k + 1):
            log_c = math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            powers = (j * log_p if j else 0.0) + ((n - j) * log_q if n - j else 0.0)
            total += np.exp(log_c + powers)
    return np.minimum(total, 1.0)
