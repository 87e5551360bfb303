"""A second, independent implementation of the unified law's fit and its leave-one-scheme-out
error, written from the README, the paper notes and what ``uscl fit --json`` reports (never
from gmse_cli.fit): tests re-derive the JSON's held-out numbers with it.

Loss(N, D) = A (N rho)^-alpha + B D^-beta + E, rho = prod over stages of
L_f s_f(F_f log_{1/4} GMSE)^C_f, s_f the family's ``shape`` in the JSON (tanh or erf); objective = sum over fitted runs of Huber_delta(log pred -
log obs), each term times its run's weight (1, or with ``scheme_weighted`` 1/(its scheme's
fitted runs) x (fitted runs)/(fitted schemes), kept unchanged by a refit), plus with a prior
sum_k (v_k - mu_k)^2 / (2 sigma_k^2) / c. Free constants: log A, alpha, log B, beta, E and the
quantization family's L, F, C (the sparsity curve is held at the values the JSON reports).
scipy's L-BFGS-B from a random multistart, with analytic gradients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import erf

SHAPES = {"tanh": np.tanh, "erf": erf}


def shape_log_derivative(shape: str, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """z s'(z) / s(z) for s = tanh (z (1/t - t)) or erf (z (2/sqrt(pi)) exp(-z^2) / t), t = s(z)."""
    if shape == "tanh":
        return z * (1.0 / t - t)
    return z * 2.0 / np.sqrt(np.pi) * np.exp(-z * z) / t

LOG4 = np.log(4.0)
# [log A, alpha, log B, beta, E, L, F, C]; wide boxes: none of the optima below touches one
# except E at 0.
BOUNDS = [(-10.0, 15.0), (1e-3, 2.0), (-10.0, 20.0), (1e-3, 2.0), (0.0, 10.0), (0.05, 5.0),
          (1e-3, 5.0), (1e-2, 10.0)]


@dataclass(frozen=True)
class Runs:
    """Per-run arrays: log N, log D, log loss, number of quantization stages k, the summed
    log_{1/4} GMSE bits x per quantization stage (padded), the held sparsity factor, and the
    quantization curve's shape."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    bits: np.ndarray  # (runs, max quantization stages) of log_{1/4} GMSE; 0 where absent
    mask: np.ndarray  # same shape, 1 where a quantization stage exists
    log_rho_sparse: np.ndarray
    scheme: np.ndarray
    fitted: np.ndarray
    weight: np.ndarray  # each run's Huber weight in the objective
    shape: str = "tanh"  # the quantization curve's s

    def take(self, keep: np.ndarray) -> Runs:
        return Runs(*(getattr(self, f)[keep] for f in self.__dataclass_fields__ if f != "shape"), shape=self.shape)

    def s(self, F: float) -> np.ndarray:
        """s(F x) per quantization stage, 1 where there is none."""
        return np.where(self.mask > 0, SHAPES[self.shape](F * self.bits), 1.0)


def runs_from_json(result: dict) -> Runs:
    """Each run's stage GMSEs come from its scheme's row in ``capacities``."""
    stages = {c["scheme"]: c["stage_gmse"] for c in result["capacities"]}
    sparse = result["families"]["sparsity"]
    rows = result["residuals"]
    width = max(sum(f == "quantization" for f, _ in s) for s in stages.values())
    bits = np.zeros((len(rows), width))
    mask = np.zeros((len(rows), width))
    log_rho_sparse = np.zeros(len(rows))
    for i, row in enumerate(rows):
        j = 0
        for family, g in stages[row["scheme"]]:
            x = -np.log(g) / LOG4
            if family == "quantization":
                bits[i, j], mask[i, j] = x, 1.0
                j += 1
            else:
                assert family == "sparsity"
                log_rho_sparse[i] += np.log(sparse["L"] * SHAPES[sparse["shape"]](sparse["F"] * x) ** sparse["C"])
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    scheme, fitted = col("scheme"), col("fitted").astype(bool)
    return Runs(np.log(col("N")), np.log(col("D")), np.log(col("loss")), bits, mask, log_rho_sparse,
                scheme, fitted, scheme_weights(scheme, fitted) if result.get("scheme_weighted") else np.ones(len(rows)),
                result["families"]["quantization"]["shape"])


def scheme_weights(scheme: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """heldout_method's rule: 1/(the scheme's fitted runs) x (fitted runs)/(fitted schemes); 0 if not fitted."""
    names, count = np.unique(scheme[fitted], return_counts=True)
    per = dict(zip(names, count, strict=True))
    return np.array([fitted.sum() / len(names) / per[s] if f else 0.0 for s, f in zip(scheme, fitted, strict=True)])


def log_rho(theta: np.ndarray, runs: Runs) -> np.ndarray:
    L, F, C = theta[5:8]
    return runs.mask.sum(1) * np.log(L) + C * np.log(runs.s(F)).sum(1) + runs.log_rho_sparse


def predict(theta: np.ndarray, runs: Runs, lr: np.ndarray | None = None) -> np.ndarray:
    """Predicted loss; log rho from the curves in theta unless given per run (``lr``)."""
    a, alpha, b, beta, E = theta[:5]
    lr = log_rho(theta, runs) if lr is None else lr
    return np.exp(a - alpha * (runs.log_n + lr)) + np.exp(b - beta * runs.log_d) + E


def decoupled_objective(result: dict, runs: Runs) -> float:
    """The capacity model's objective: its decoupled stage's weighted Huber sum over the fitted runs, each
    scheme's log rho its capacities[].rho, with the reported law constants; with a prior, plus its terms
    on the law's constants (alpha, beta, E: the stage has no curve) over c."""
    rho = {c["scheme"]: c["rho"] for c in result["capacities"]}
    fitted = runs.take(runs.fitted)
    lr = np.log([rho[s] for s in fitted.scheme])
    r = np.log(predict(theta_from_json(result), fitted, lr)) - fitted.log_loss
    f = float(huber(r, result["huber_delta"])[0] @ fitted.weight)
    if not result["prior"]:
        return f
    prior = prior_from_json(result)
    law = prior.index < 5
    return f + Prior(prior.index[law], prior.mean[law], prior.sigma[law], prior.scale).value_grad(theta_from_json(result))[0]


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Value and derivative of the Huber function: r^2/2 inside delta, delta(|r| - delta/2) out."""
    inside = np.abs(r) <= delta
    return np.where(inside, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)), np.where(inside, r, delta * np.sign(r))


@dataclass(frozen=True)
class Prior:
    """sum_k (theta_k - mean_k)^2 / (2 sigma_k^2), divided by the likelihood scale c."""

    index: np.ndarray  # into theta, whose prior coordinates are all in natural units
    mean: np.ndarray
    sigma: np.ndarray
    scale: float = 1.0

    def value_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = (theta[self.index] - self.mean) / self.sigma
        g = np.zeros_like(theta)
        g[self.index] = z / self.sigma / self.scale
        return 0.5 * float(z @ z) / self.scale, g


PRIOR_INDEX = {"alpha": 1, "beta": 3, "E": 4, "quantization.L": 5, "quantization.F": 6, "quantization.C": 7}


def prior_from_json(result: dict) -> Prior:
    """The prior the JSON's ``prior`` names ('Gaussian: alpha 0.13 +/- 0.05, ...') and its ``prior_scale`` c."""
    terms = re.findall(r"([\w.]+) (\S+) \+/- ([^,\s]+)", result["prior"])
    return Prior(np.array([PRIOR_INDEX[k] for k, _, _ in terms]), np.array([float(m) for _, m, _ in terms]),
                 np.array([float(s) for _, _, s in terms]), result["prior_scale"])


def likelihood_scale(resid: np.ndarray, delta: float) -> float:
    """c = (share of residuals within delta) / mean clip(r, -delta, delta)^2."""
    return float(np.mean(np.abs(resid) <= delta) / np.mean(np.clip(resid, -delta, delta) ** 2))


def objective(theta: np.ndarray, runs: Runs, delta: float, prior: Prior | None = None) -> tuple[float, np.ndarray]:
    a, alpha, b, beta, E, L, F, C = theta
    t = runs.s(F)
    lr = runs.mask.sum(1) * np.log(L) + C * np.log(t).sum(1) + runs.log_rho_sparse
    t1 = np.exp(a - alpha * (runs.log_n + lr))
    t2 = np.exp(b - beta * runs.log_d)
    pred = t1 + t2 + E
    h, dh = huber(np.log(pred) - runs.log_loss, delta)
    h = h * runs.weight
    w = runs.weight * dh / pred  # d objective / d pred
    dlr = -alpha * t1 * w  # d objective / d log rho
    # d s(Fx)/dF / s(Fx) = (Fx s'(Fx) / s(Fx)) / F
    dF = C * (runs.mask * shape_log_derivative(runs.shape, F * runs.bits, t)).sum(1) / F
    grad = np.array([
        (t1 * w).sum(), (-(runs.log_n + lr) * t1 * w).sum(), (t2 * w).sum(), (-runs.log_d * t2 * w).sum(),
        w.sum(), (dlr * runs.mask.sum(1) / L).sum(), (dlr * dF).sum(), (dlr * np.log(t).sum(1)).sum(),
    ])
    if prior is None:
        return float(h.sum()), grad
    p, pg = prior.value_grad(theta)
    return float(h.sum()) + p, grad + pg


def starts(n: int, seed: int) -> np.ndarray:
    """Random starts over plausible ranges (independent of uscl's grid)."""
    rng = np.random.default_rng(seed)
    lo = np.array([0.0, 0.03, 2.0, 0.1, 0.0, 0.7, 0.2, 0.5])
    hi = np.array([8.0, 0.5, 10.0, 0.6, 2.5, 1.3, 1.0, 3.0])
    return lo + (hi - lo) * rng.random((n, 8))


def fit(runs: Runs, delta: float, n_starts: int = 60, seed: int = 0,
        prior: Prior | None = None) -> tuple[np.ndarray, float]:
    """Best L-BFGS-B end point over the starts, polished once more from there."""
    best = (None, np.inf)
    for x0 in starts(n_starts, seed):
        res = minimize(objective, x0, args=(runs, delta, prior), jac=True, method="L-BFGS-B", bounds=BOUNDS,
                       options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-12})
        if np.isfinite(res.fun) and res.fun < best[1]:
            best = (res.x, res.fun)
    res = minimize(objective, best[0], args=(runs, delta, prior), jac=True, method="L-BFGS-B", bounds=BOUNDS,
                   options={"maxiter": 5000, "ftol": 1e-16, "gtol": 1e-14})
    return (res.x, res.fun) if res.fun <= best[1] else best


def theta_from_json(result: dict) -> np.ndarray:
    q = result["families"]["quantization"]
    return np.array([np.log(result["A"]), result["alpha"], np.log(result["B"]), result["beta"], result["E"],
                     q["L"], q["F"], q["C"]])


def free_fit_scale(runs: Runs, delta: float, n_starts: int = 60, seed: int = 0) -> float:
    """A prior fit's c as heldout_method defines it: from the residuals of the fit without the prior."""
    theta, _ = fit(runs, delta, n_starts, seed)
    return likelihood_scale(np.log(predict(theta, runs)) - runs.log_loss, delta)


def leave_one_scheme_out(runs: Runs, scheme: str, delta: float, n_starts: int = 60, seed: int = 0,
                         prior: Prior | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Cold refit on the fitted runs of every other scheme (a prior with that refit's c); residuals of
    the scheme's runs."""
    train = runs.take(runs.fitted & (runs.scheme != scheme))
    theta, obj = fit(train, delta, n_starts, seed, prior)
    held = runs.take(runs.scheme == scheme)
    return theta, obj, np.log(predict(theta, held)) - held.log_loss


def leave_largest_out(runs: Runs, n_cut: float, delta: float, n_starts: int = 60, seed: int = 0,
                      prior: Prior | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """Cold refit on the fitted runs below ``n_cut``; residuals of every run at or above it."""
    large = runs.log_n >= np.log(n_cut)
    theta, obj = fit(runs.take(runs.fitted & ~large), delta, n_starts, seed, prior)
    held = runs.take(large)
    return theta, obj, np.log(predict(theta, held)) - held.log_loss


def heldout_figures(result: dict) -> tuple[float, float, dict[str, tuple[int, float, float]]]:
    """From the per-run held-out residuals (scheme split): the pooled RMSE over the tested runs inside
    the domain and outside it, and each scheme's (runs, RMSE, bias); NaN where untested."""
    fitted = np.array([r["fitted"] for r in result["residuals"]])
    scheme = np.array([r["scheme"] for r in result["residuals"]])
    hs = np.array([np.nan if r["heldout_scheme"] is None else r["heldout_scheme"] for r in result["residuals"]])
    tested = np.isfinite(hs)
    rmse = lambda sel: float(np.sqrt(np.mean(hs[sel] ** 2))) if sel.any() else np.nan  # noqa: E731
    per = {s: (int((scheme == s).sum()), rmse(scheme == s), float(np.mean(hs[scheme == s]))) for s in set(scheme)}
    return rmse(tested & fitted), rmse(tested & ~fitted), per
