"""Capacity drift: does a run's implied capacity move with model size or tokens per parameter?

The law gives a scheme one capacity at every N and D. Each run's loss, read through the fitted
law, implies its own capacity::

    rho_i = ((loss_i - B D_i^-beta - E) / A)^(-1/alpha) / N_i

(none when loss_i <= B D_i^-beta + E: no capacity reproduces it). If the law holds, the ratio
of implied to fitted capacity does not trend within a scheme. :func:`drift_report` regresses
y_i = log(rho_i / rho_scheme(i)) on log N_i and log(D_i / N_i) jointly, with one intercept per
scheme (ordinary least squares; 95% intervals from the t distribution with n - schemes - slopes
degrees of freedom: 2 slopes, or 1 where a regressor is dropped (:data:`MIN_SPREAD`)), over the
fitted runs of compressed schemes. Each scheme also gets its own regression (on log N, and log D/N
where it varies within the scheme), whose log N slope is reported with its interval where the
scheme has 3 or more model sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gmse_cli.fit.evidence import DriftReport, DriftScheme, DriftSlope

__all__ = ["implied_capacity", "drift_report", "run_drift"]

MIN_SPREAD = 0.01
"""A regressor whose within-scheme values span less than this in log units (1%) is treated as
constant: a sweep at one tokens-per-parameter ratio still has D/N differ in the third digit
(whole steps of a batch), and a slope on that noise is meaningless."""


def implied_capacity(loss: np.ndarray, N: np.ndarray, D: np.ndarray, *, A: float, alpha: float, B: float,
                     beta: float, E: float) -> np.ndarray:
    """The capacity that makes the law reproduce each loss (NaN where none does)."""
    excess = np.asarray(loss, dtype=float) - B * np.asarray(D, dtype=float) ** -beta - E
    if not alpha > 0:  # a loss flat in N (alpha 0: the fit's own check refuses it) implies no capacity
        return np.full(excess.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rho = np.where(excess > 0, (excess / A) ** (-1.0 / alpha) / np.asarray(N, dtype=float), np.nan)
    return rho


def drift_report(schemes: Sequence[str], N: np.ndarray, D: np.ndarray, implied: np.ndarray,
                 fitted_rho: np.ndarray, use: np.ndarray) -> DriftReport | None:
    """The joint within-scheme regression of the module docstring over the runs marked ``use``.

    None when fewer than 3 degrees of freedom remain.
    """
    from scipy.stats import t as student_t

    use = np.asarray(use, dtype=bool) & np.isfinite(implied) & (implied > 0)
    skipped = int(len(use) - use.sum())
    idx = np.flatnonzero(use)
    names = sorted({schemes[i] for i in idx})
    n, k = len(idx), len(names)
    if n - k - 2 < 3:
        return None
    y = np.log(implied[idx]) - np.log(fitted_rho[idx])
    X = np.zeros((n, k + 2))
    col = {s: j for j, s in enumerate(names)}
    X[np.arange(n), [col[schemes[i]] for i in idx]] = 1.0
    X[:, k] = np.log(N[idx])
    X[:, k + 1] = np.log(D[idx] / N[idx])
    # A regressor (nearly) constant within every scheme has no within-scheme slope: drop its
    # column, so its noise neither gets a slope nor widens the other's interval.
    regressors = [(j, label) for j, label in ((k, "log N"), (k + 1, "log D/N")) if _within_spread(X[:, :k], X[:, j])
                  >= MIN_SPREAD / 2]
    Xr = X[:, list(range(k)) + [j for j, _ in regressors]]
    coef, *_ = np.linalg.lstsq(Xr, y, rcond=None)
    dof = n - np.linalg.matrix_rank(Xr)
    resid = y - Xr @ coef
    cov = float(resid @ resid) / dof * np.linalg.pinv(Xr.T @ Xr)
    q = float(student_t.ppf(0.975, dof))
    slopes = []
    for c, (_, label) in enumerate(regressors, start=k):
        se = math.sqrt(max(float(cov[c, c]), 0.0))
        slopes.append(DriftSlope(regressor=label, slope=float(coef[c]), low=float(coef[c] - q * se),
                                 high=float(coef[c] + q * se), stderr=se))
    return DriftReport(n_runs=n, n_schemes=k, skipped=skipped, slopes=slopes,
                       residual_rms=float(np.sqrt(np.mean(resid**2))),
                       schemes=[_one_scheme(s, X[:, k:][cols], y[cols]) for s in names
                                for cols in [np.flatnonzero(X[:, col[s]] > 0)]])


def _within_spread(groups: np.ndarray, column: np.ndarray) -> float:
    """Largest deviation of ``column`` from its mean within each scheme (``groups``: one-hot)."""
    return float(np.max(np.abs(column - groups @ np.linalg.lstsq(groups, column, rcond=None)[0])))


def _one_scheme(scheme: str, Z: np.ndarray, y: np.ndarray) -> DriftScheme:
    """y on [1, log N, log D/N] within one scheme (log D/N dropped where it does not vary)."""
    from scipy.stats import t as student_t

    n = len(y)
    out = DriftScheme(scheme=scheme, n_runs=n, log_ratio_mean=float(np.mean(y)), slope_log_n=None, low=None, high=None)
    if len(np.unique(np.round(Z[:, 0], 9))) < 3:
        return out
    keep = [0] + ([1] if np.ptp(Z[:, 1]) >= MIN_SPREAD else [])
    X = np.column_stack([np.ones(n), Z[:, keep]])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = n - np.linalg.matrix_rank(X)
    if dof < 1:
        return out.model_copy(update={"slope_log_n": float(coef[1])})
    resid = y - X @ coef
    se = math.sqrt(max(float(resid @ resid) / dof * float(np.linalg.pinv(X.T @ X)[1, 1]), 0.0))
    q = float(student_t.ppf(0.975, dof))
    return out.model_copy(update={"slope_log_n": float(coef[1]), "low": float(coef[1] - q * se),
                                  "high": float(coef[1] + q * se)})


def run_drift(runs, implied, logrho, train):
    """The drift report over the fitted runs of compressed schemes (:mod:`gmse_cli.fit.drift`)."""
    use = train & np.array([not r.is_dense for r in runs])
    return drift_report([r.scheme for r in runs], np.array([r.N for r in runs]), np.array([r.D for r in runs]),
                        implied, np.exp(logrho), use)
