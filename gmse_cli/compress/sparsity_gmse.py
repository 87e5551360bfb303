"""Exact Gaussian MSEs of sparsity (``E||x - C(x)||^2 / E||x||^2`` for iid standard normal
``x``, in the limit of long rows): :func:`magnitude_gmse` (closed form) and :func:`nm_gmse`
(quadrature over the order statistics of ``|x|``, or of the block energies for N:MxK).

Apart from the masks (:mod:`~gmse_cli.compress.sparsity`, numba kernels) so that an exact
answer never loads numba; versioned with them by that module's ``ALGORITHM_VERSION``.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.normal import binomial_cdf, chi2_cdf, erfinv, ndtri
from gmse_cli.errors import SpecError

__all__ = ["magnitude_gmse", "nm_gmse"]


_CANCELS_BELOW = 0.05  # where the difference below loses more than 1e-12 of its digits


def magnitude_gmse(sparsity: float) -> float:
    """GMSE of unstructured magnitude pruning of a fraction ``sparsity`` (infinite rows).

    Pruning zeroes ``|x| < t`` with ``P(|x| < t) = s``, i.e. ``t = Phi^-1((1 + s) / 2)``, and
    loses ``E[x^2; |x| < t] = (2 Phi(t) - 1) - 2 t phi(t)``.
    """
    s = float(sparsity)
    if not (0.0 <= s < 1.0) or not math.isfinite(s):
        raise SpecError(f"magnitude_gmse: sparsity={sparsity} is outside [0, 1)")
    if s == 0.0:
        return 0.0
    if s < _CANCELS_BELOW:
        # s - 2 t phi(t) cancels to nothing (below s = 1e-6 it went negative). The same loss as
        # E[chi2_1; chi2_1 < t^2] = P(3/2, t^2 / 2), t^2 / 2 = erfinv(s)^2, without cancellation.
        return float(chi2_cdf(3, 2.0 * erfinv(s) ** 2)[0])
    t = -ndtri((1.0 - s) / 2.0)  # Phi^-1((1 + s) / 2), from the side that keeps 1 - s
    phi = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    return s - 2.0 * t * phi  # 2 Phi(t) - 1 = s by the choice of t


def nm_gmse(n: int, m: int, k: int = 1) -> float:
    """Exact GMSE of N:M pruning on iid normals: keep the ``n`` largest of every ``m`` units,
    a unit being one entry (``k = 1``, ranked by ``|x|``) or a block of ``k`` consecutive
    entries (N:MxK, ranked by L2 norm).

    A unit of norm ``r`` is pruned iff at most ``m - n - 1`` of the other ``m - 1`` units of
    its group have a smaller norm, each independently with probability ``F(r)``, the CDF of a
    chi distribution with ``k`` degrees of freedom (``F(r) = P(chi2_k < r^2)``; ``erf(r / sqrt 2)``
    for ``k = 1``). It loses ``r^2`` of the ``k`` entries' expected energy ``k``, so

        GMSE = (1/k) int_0^inf r^2 * f_k(r) * P[Binomial(m - 1, F(r)) <= m - n - 1] dr,

    ``f_k`` the chi density. The integrand is analytic in ``r`` (a polynomial in ``F``, itself
    analytic, times ``r^(k+1) exp(-r^2/2)``), so composite Gauss-Legendre converges
    geometrically: panels at most one unit wide of :data:`_NM_NODES` nodes each reach the
    float64 rounding level (scipy.integrate.quad agrees to 2e-16 for units of up to 16 entries;
    importing it would cost 0.3 s). Groups of many units (a row pruned by magnitude is a group
    of the whole row) make the binomial factor a step narrower than a panel, around which the
    panels are refined (:func:`_transition`): within 2e-13 of scipy's adaptive quadrature over
    the CDF for groups of 4096.
    For 2:4x2 this is 5/24 (chi2_2 is exponential).
    """
    ints = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (n, m, k))
    if not ints or not 1 <= n <= m or k < 1:
        raise SpecError(f"nm_gmse: need integers 1 <= n <= m and k >= 1, got n={n}, m={m}, k={k}")
    if n == m:
        return 0.0
    # The integrand is smooth and negligible beyond sqrt(k) + 11 (density < 1e-26 there).
    upper = 11.0 + math.sqrt(k)
    nodes, weights = _nm_nodes(upper, _transition(n, m, k, upper))
    cdf, survival = chi2_cdf(k, nodes * nodes)
    density = _chi_density(k, nodes)
    pruned = binomial_cdf(m - n - 1, m - 1, cdf, survival)
    return float(np.sum(weights * nodes * nodes * density * pruned))


def _chi_density(k: int, r: np.ndarray) -> np.ndarray:
    """The chi density with ``k`` degrees of freedom, divided by ``k``."""
    if k == 1:
        return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * r * r)
    log_norm = (1.0 - k / 2.0) * math.log(2.0) - math.lgamma(k / 2.0)  # log of f_k's constant
    with np.errstate(divide="ignore"):
        return np.exp(log_norm + (k - 1) * np.log(r) - 0.5 * r * r) / k


_NM_NODES = 24  # per panel; panels at most one unit of r wide, 24 at least
_FINE_SPAN = 12  # the step's half-width in its own widths: the binomial tail is < 1e-30 beyond
_CHI_DENSITY_MAX = 0.8  # above every chi density's peak (k = 1: sqrt(2 / pi) = 0.798, at 0)


def _transition(n: int, m: int, k: int, upper: float) -> tuple[float, float] | None:
    """Where P[Binomial(m - 1, F(r)) <= m - n - 1] steps from 1 to 0, and its width, both in
    r, if the step is too narrow for the regular panels (many units: a row-wide group of 4096
    entries steps within 0.01); None otherwise (N:M up to M = 64 here)."""
    p = (m - n - 0.5) / (m - 1)
    regular = upper / max(24, math.ceil(upper))
    spread = math.sqrt(p * (1.0 - p) / (m - 1)) if 0.0 < p < 1.0 else 0.0
    if spread / _CHI_DENSITY_MAX >= regular / 8 or spread == 0.0:
        return None  # wide however steep the CDF (2:4's step spans 0.34 of r at least)
    lo, hi = 0.0, upper
    for _ in range(60):  # bisection for F(r) = p: the chi CDF, monotone in r
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi2_cdf(k, np.array([mid * mid]))[0][0] < p else (lo, mid)
    center = 0.5 * (lo + hi)
    width = spread / float(k * _chi_density(k, np.array([center]))[0])
    return (center, width) if width < regular / 8 else None


def _nm_nodes(upper: float, fine: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [0, upper]; with ``fine`` = (center,
    width), extra panel edges every half width within :data:`_FINE_SPAN` widths of center."""
    panels = max(24, math.ceil(upper))
    x, w = np.polynomial.legendre.leggauss(_NM_NODES)
    if fine is None:
        half = upper / (2 * panels)
        centers = half * (2 * np.arange(panels) + 1.0)
        return (centers[:, None] + half * x).ravel(), np.tile(half * w, panels)
    center, width = fine
    # Beyond the Gaussian span, panels doubling in width: where few units are kept or dropped
    # the step is Poisson-like, its tail exponential over about one width (keeping 4095 of
    # 4096 lost 0.4% of the GMSE when the refinement stopped at 12 widths).
    spans = np.concatenate([0.5 * np.arange(-2 * _FINE_SPAN, 2 * _FINE_SPAN + 1),
                            _FINE_SPAN * 2.0 ** np.arange(1, 40), -_FINE_SPAN * 2.0 ** np.arange(1, 40)])
    extra = center + width * spans
    edges = np.unique(np.concatenate([np.linspace(0.0, upper, panels + 1), np.clip(extra, 0.0, upper)]))
    halves = 0.5 * np.diff(edges)
    centers = edges[:-1] + halves
    return (centers[:, None] + halves[:, None] * x).ravel(), (halves[:, None] * w).ravel()
