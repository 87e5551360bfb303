"""Objectives: Huber on log-loss residuals of the law, and Huber on capacity residuals.

An objective has ``names`` (its internal parameters) and ``value_grad(theta, weights=None,
...)`` -> (f (k,), gradient (k, P)) for parameter rows ``theta`` (k, P), with per-row data
weights (k or 1, n). Objectives are plain sums over data points, so a further term over the
same parameters (a prior's negative log-density, for a MAP fit) adds to ``f`` and its gradient
without touching the data term.

The law's residuals come from a fused numba kernel (:func:`_law_numba`) with a plain numpy
twin (:func:`_law_numpy`) the tests compare it with.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.fit.params import LAW_INTERNAL
from gmse_cli.fit.parts import StagePart

__all__ = [
    "DEFAULT_HUBER_DELTA",
    "DEFAULT_CAPACITY_DELTA",
    "huber",
    "huber_gradient",
    "LossObjective",
    "CapacityObjective",
]

DEFAULT_HUBER_DELTA = 1e-3  # Hoffmann et al. 2022 / Besiroglu et al. 2024, on log-loss
DEFAULT_CAPACITY_DELTA = 1e-4  # the paper's capacity-shape fits, on rho


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """0.5 r^2 inside |r| <= delta, delta * (|r| - delta / 2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_gradient(r: np.ndarray, delta: float) -> np.ndarray:
    """psi(r) = d huber / dr = clip(r, -delta, delta)."""
    return np.clip(r, -delta, delta)


def _law_numpy(theta, logN, logD, y, logrho, weights, delta):
    """Huber objective of the law and its gradient (numpy twin of :func:`_law_numba`).

    ``theta`` (k, 5) in (log A, alpha, log B, beta, log E); ``logrho`` (1 or k, n);
    ``weights`` (1 or k, n). Returns f (k,), the law gradient (k, 5) and the gradient with
    respect to each run's log rho (k, n).
    """
    a, alpha, b, beta, e = (theta[:, j : j + 1] for j in range(5))
    x1 = logN + logrho
    t1 = a - alpha * x1
    t2 = b - beta * logD
    m = np.maximum(np.maximum(t1, t2), e)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
    s = e1 + e2 + e3
    r = m + np.log(s) - y
    u = huber_gradient(r, delta) * weights
    f = (huber(r, delta) * weights).sum(axis=1)
    uw1 = u * e1 / s
    uw2 = u * e2 / s
    g = np.empty_like(theta)
    g[:, 0] = uw1.sum(axis=1)
    g[:, 1] = -(uw1 * x1).sum(axis=1)
    g[:, 2] = uw2.sum(axis=1)
    g[:, 3] = -(uw2 @ logD)
    g[:, 4] = u.sum(axis=1) - g[:, 0] - g[:, 2]  # the three softmax weights sum to 1
    return f, g, -alpha * uw1


_law_numba_kernel = None


def _law_numba(theta, logN, logD, y, logrho, weights, delta):
    """Fused version of :func:`_law_numpy` (same arguments, same results).

    Serial on purpose: most calls carry a few active rows, and on a busy 2-core machine a
    parallel kernel measured slower (87 ms serial vs 135 ms parallel for 4,500 x 240 points).
    """
    global _law_numba_kernel
    if _law_numba_kernel is None:
        from gmse_cli.kernel_cache import numba
        from gmse_cli.progress import watch_compiles

        watch_compiles()  # a first fit on a machine compiles it (2 s of CPU): say so, as the GMSE kernels do

        @numba.njit(cache=True)
        def kernel(theta, logN, logD, y, logrho, weights, delta):  # pragma: no cover - compiled
            k = theta.shape[0]
            n = logN.shape[0]
            f = np.zeros(k)
            g = np.zeros((k, 5))
            urho = np.empty((k, n))
            rho_stride = 1 if logrho.shape[0] > 1 else 0  # (1, n) rows broadcast over the batch
            w_stride = 1 if weights.shape[0] > 1 else 0
            for i in range(k):
                a, alpha, b, beta, e = theta[i, 0], theta[i, 1], theta[i, 2], theta[i, 3], theta[i, 4]
                ri = i * rho_stride
                wi = i * w_stride
                fa = 0.0
                g0 = 0.0
                g1 = 0.0
                g2 = 0.0
                g3 = 0.0
                g4 = 0.0
                for j in range(n):
                    x1 = logN[j] + logrho[ri, j]
                    t1 = a - alpha * x1
                    t2 = b - beta * logD[j]
                    m = max(t1, t2, e)
                    e1 = math.exp(t1 - m)
                    e2 = math.exp(t2 - m)
                    e3 = math.exp(e - m)
                    s = e1 + e2 + e3
                    r = m + math.log(s) - y[j]
                    w = weights[wi, j]
                    ar = abs(r)
                    if ar <= delta:
                        fa += w * 0.5 * r * r
                        u = w * r
                    else:
                        fa += w * delta * (ar - 0.5 * delta)
                        u = w * delta if r > 0 else -w * delta
                    uw1 = u * e1 / s
                    uw2 = u * e2 / s
                    g0 += uw1
                    g1 -= uw1 * x1
                    g2 += uw2
                    g3 -= uw2 * logD[j]
                    g4 += u * e3 / s
                    urho[i, j] = -alpha * uw1
                f[i] = fa
                g[i, 0] = g0
                g[i, 1] = g1
                g[i, 2] = g2
                g[i, 3] = g3
                g[i, 4] = g4
            return f, g, urho

        _law_numba_kernel = kernel
    return _law_numba_kernel(theta, logN, logD, y, logrho, weights, float(delta))


class LossObjective:
    """Huber on log-loss residuals of the law with a capacity part, batched over rows.

    Internally log N and log D are centered (A (N/N0)^-alpha with N0 the geometric mean size):
    uncentered, log A and alpha are almost collinear and L-BFGS crawls along the valley.
    Parameters are internal (centered) everywhere in the optimizer; :meth:`to_public` and
    :meth:`from_public` convert (log A, alpha, log B, beta, log E) at the boundary.
    """

    def __init__(self, logN, logD, y, part, delta: float, *, backend: str = "numba",
                 center: tuple[bool, bool] = (True, True)):
        self.cN = float(np.mean(logN)) if center[0] else 0.0
        self.cD = float(np.mean(logD)) if center[1] else 0.0
        self.logN, self.logD, self.y = logN - self.cN, logD - self.cD, y
        self.part = part
        self.delta = delta
        self.names = LAW_INTERNAL + tuple(part.names)
        self._law = _law_numba if backend == "numba" else _law_numpy
        self._ones = np.ones((1, len(y)))
        self._zeros = np.zeros((1, len(y)))

    def to_public(self, theta: np.ndarray) -> np.ndarray:
        out = np.array(theta, dtype=float, ndmin=2)
        out[:, 0] += out[:, 1] * self.cN
        out[:, 2] += out[:, 3] * self.cD
        return out

    def from_public(self, theta: np.ndarray) -> np.ndarray:
        out = np.array(theta, dtype=float, ndmin=2)
        out[:, 0] -= out[:, 1] * self.cN
        out[:, 2] -= out[:, 3] * self.cD
        return out

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Log-loss predictions for internal parameters (k, P) -> (k, n)."""
        theta = np.atleast_2d(theta)
        a, alpha, b, beta, e = (theta[:, j : j + 1] for j in range(5))
        x1 = self.logN + (self.part.logrho(theta[:, 5:], theta[:, 1]) if theta.shape[1] > 5 else 0.0)
        return np.logaddexp(np.logaddexp(a - alpha * x1, b - beta * self.logD), e)

    def logrho(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        return np.broadcast_to(self.part.logrho(theta[:, 5:], theta[:, 1]), (theta.shape[0], len(self.y)))

    def value_grad(self, theta, weights=None):
        # Trial points far off can overflow; such rows come back non-finite and the optimizer
        # rejects them, so the floating-point warnings carry no information.
        with np.errstate(all="ignore"):
            return self._value_grad(theta, weights)

    def _value_grad(self, theta, weights=None):
        theta = np.ascontiguousarray(theta, dtype=float)
        if theta.shape[1] == 5:
            logrho = self._zeros
        else:
            logrho = np.ascontiguousarray(self.part.logrho(theta[:, 5:], theta[:, 1]), dtype=float)
        w = self._ones if weights is None else np.ascontiguousarray(weights, dtype=float)
        f, g_law, urho = self._law(theta[:, :5].copy(), self.logN, self.logD, self.y, logrho, w, self.delta)
        if theta.shape[1] == 5:
            return f, g_law
        g_part, g_alpha = self.part.backprop(theta[:, 5:], urho, theta[:, 1])
        if g_alpha is not None:
            g_law[:, 1] += g_alpha
        return f, np.hstack([g_law, g_part])


class CapacityObjective:
    """Huber on rho residuals of per-family capacity curves (targets may differ per row)."""

    def __init__(self, part: StagePart, target: np.ndarray, delta: float):
        self.part, self.target, self.delta = part, target, delta
        self.names = part.names

    def predict(self, theta):
        return np.exp(self.part.logrho(np.atleast_2d(theta)))

    def value_grad(self, theta, weights=None, target=None):
        with np.errstate(all="ignore"):
            return self._value_grad(theta, weights, target)

    def _value_grad(self, theta, weights=None, target=None):
        rho = np.exp(self.part.logrho(theta))
        r = rho - (self.target if target is None else target)
        h = huber(r, self.delta)
        u = huber_gradient(r, self.delta)
        if weights is not None:
            h, u = h * weights, u * weights
        return h.sum(axis=1), self.part.backprop(theta, u * rho)[0]
