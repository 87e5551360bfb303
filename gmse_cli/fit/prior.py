"""Gaussian priors on the law's constants, for a MAP fit (``uscl fit --prior paper``).

A MAP fit minimizes the data's negative log-likelihood plus the prior's::

    c * f(theta) + sum_k (v_k(theta) - mu_k)^2 / (2 sigma_k^2)

with f the fit's Huber objective on log-loss residuals and v_k a constant in its natural units
(E, not log E). The Huber objective is not a log-likelihood; ``c`` puts it in those units:
c = mean psi'(r) / mean psi(r)^2 over the residuals r of the free fit on the same runs, with
psi the Huber gradient (clip(r, -delta, delta)) and psi' its derivative (1 inside delta, 0
outside). Then c * f has the curvature of the estimator's sampling distribution (the M-estimator
sandwich, E psi^2 / (E psi')^2 per observation), and for least squares c = 1 / mean r^2, the
Gaussian likelihood with the residuals' variance. The profile likelihood
(:mod:`gmse_cli.fit.identify`) takes the same ``c`` with the fit's free constants off the count. Internally the prior is divided by ``c`` so the
objective keeps the Huber objective's scale: f + prior / c.

The paper's prior is its Llama/C4 fit (shared/reference/paper.md, section 1): the constants
with their bootstrap 1-sigma. A and B are not published, so they have no prior; neither do
the sparsity and vq curves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.objective import huber_gradient
from gmse_cli.fit.params import internal_index, is_log

__all__ = ["PAPER_PRIOR", "PAPER_PRIOR_SOURCE", "PRIORS", "resolve_prior", "likelihood_scale", "PriorTerm",
           "MapObjective"]

PAPER_PRIOR_SOURCE = ("paper (Panferov et al. 2025, arXiv 2506.01863), fitted constants for Llama on C4, "
                      "+/- 1 sigma by bootstrap")
# (value, 1-sigma) as published; shared/reference/paper.md, section 1.
PAPER_PRIOR: dict[str, tuple[float, float]] = {
    "alpha": (0.13, 0.05),
    "beta": (0.33, 0.06),
    "E": (1.3, 0.5),
    "quantization.L": (1.0, 0.7),
    "quantization.F": (0.41, 0.02),
    "quantization.C": (1.39, 0.08),
}
PRIORS: dict[str, dict[str, tuple[float, float]]] = {"paper": PAPER_PRIOR}


def resolve_prior(prior: str | Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]] | None:
    """A prior by name ('paper') or as {constant: (mean, sigma)}; None for none."""
    if prior is None:
        return None
    if isinstance(prior, str):
        if prior not in PRIORS:
            raise FitError(f"unknown prior '{prior}' (known: {', '.join(PRIORS)})")
        return dict(PRIORS[prior])
    out = {}
    for name, (mean, sigma) in prior.items():
        if not (math.isfinite(mean) and sigma > 0 and math.isfinite(sigma)):
            raise FitError(f"prior on {name}: mean {mean} and sigma {sigma} must be finite, sigma positive")
        out[name] = (float(mean), float(sigma))
    return out


def likelihood_scale(residuals: np.ndarray, delta: float, *, free: int = 0) -> float:
    """c = psi'-count / sum psi(r)^2: the Huber objective in log-likelihood units (module docstring).

    ``free`` constants fitted to these residuals are taken off the count inside delta (and off n
    in the least-squares fallback), as the residual variance divides by n - p: a fit with a
    small delta pins about one residual per free constant inside it, which the error
    distribution does not put there. 0 (a MAP fit's c) counts every residual.
    """
    r = np.asarray(residuals, dtype=float)
    inside = float(np.sum(np.abs(r) <= delta)) - free
    spread = float(np.sum(huber_gradient(r, delta) ** 2))
    if inside <= 0.0 or spread == 0.0:
        # Too few residuals inside delta (or a perfect fit): fall back to least squares' (n - p) / RSS.
        return max(len(r) - free, 1) / max(float(np.sum(r**2)), len(r) * 1e-300)
    return inside / spread


class PriorTerm:
    """sum_k (v_k - mu_k)^2 / (2 sigma_k^2) over the constants that are free in this fit."""

    def __init__(self, names: Sequence[str], prior: Mapping[str, tuple[float, float]], held: Sequence[int] = ()):
        names = list(names)
        self.index, self.mean, self.sigma, self.log = [], [], [], []
        self.skipped: list[str] = []
        for key, (mean, sigma) in prior.items():
            j = internal_index(key, names)
            if j is None or j in held:  # not a constant of this model, or held: nothing to pull
                self.skipped.append(key)
                continue
            self.index.append(j)
            self.mean.append(mean)
            self.sigma.append(sigma)
            self.log.append(is_log(names[j]))
        self.index = np.array(self.index, dtype=int)
        self.mean, self.sigma = np.array(self.mean), np.array(self.sigma)
        self.log = np.array(self.log, dtype=bool)

    def value_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(k,) values and (k, P) gradients for internal parameter rows ``theta`` (k, P)."""
        g = np.zeros_like(theta)
        if not len(self.index):
            return np.zeros(theta.shape[0]), g
        t = theta[:, self.index]
        v = np.where(self.log, np.exp(np.minimum(t, 700.0)), t)
        z = (v - self.mean) / self.sigma
        dv = np.where(self.log, v, 1.0)  # d v / d theta
        g[:, self.index] = z / self.sigma * dv
        return 0.5 * np.sum(z * z, axis=1), g


class MapObjective:
    """A loss objective plus a prior divided by ``scale`` (c, per row when given as row data).

    Everything but :meth:`value_grad` is the wrapped objective's.
    """

    def __init__(self, objective, prior: PriorTerm, scale: float):
        self.objective = objective
        self.prior = prior
        self.scale = float(scale)

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def value_grad(self, theta, weights=None, scale=None):
        f, g = self.objective.value_grad(theta, weights)
        pf, pg = self.prior.value_grad(np.atleast_2d(theta))
        c = self.scale if scale is None else np.asarray(scale, dtype=float).reshape(-1)
        inv = 1.0 / c
        return f + pf * inv, g + pg * np.reshape(inv, (-1, 1))
