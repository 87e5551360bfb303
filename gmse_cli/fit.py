"""Fitting scaling laws to training runs.

Every loss model is the Chinchilla form with an effective parameter count::

    log Loss_i = log( A * (N_i * rho_i)^(-alpha) + B * D_i^(-beta) + E )

fitted by minimizing a Huber loss on log-loss residuals (delta 1e-3 by default, as Hoffmann et
al. 2022 and Besiroglu et al. 2024; a large delta such as 1 is least squares, what QuEST used)
with L-BFGS from a grid of starting points. A, B, E are fitted through their logarithms, so
the log-prediction is a log-sum-exp of three terms. The models differ only in rho:

- ``dense``      rho = 1;
- ``decoupled``  one free rho per scheme, the uncompressed reference (bf16) pinned at 1
                 (Frantar et al. 2025; QuEST);
- ``unified``    rho = prod over lossy stages of L_f * tanh(F_f * log_{1/4} GMSE)^C_f, one
                 (L, F, C) per family f fitted jointly with the law (the paper's method);
                 weights x activations and sparse+quantized formats multiply their stages;
- ``kumar``      rho = prod over {weights, activations} (1 - exp(-P_x / gamma_x)), P the bits
                 (Kumar et al. 2024);
- ``capacity``   a decoupled fit, then (L, F, C) per family fitted to its (GMSE, rho) points
                 (Huber on rho, delta 1e-4 as the paper).

Speed comes from batching: every start of the grid (and every bootstrap replicate, and every
leave-one-scheme-out refit) is one row of a stacked parameter matrix, and one fused objective
with an analytic gradient evaluates them all; :func:`_batched_lbfgs` runs L-BFGS on all rows at
once, merging rows that reach the same point. The grid stage stops each start after a few
hundred iterations, the best few distinct rows continue to convergence, and scipy's L-BFGS-B
(the reference implementation) polishes the winner on the same objective. Internally log N and
log D are centered and a decoupled capacity is parametrized by alpha * log rho: both remove
near-collinear directions that otherwise cost L-BFGS thousands of iterations.

Identifiability is checked, not assumed: a family with fewer than 3 distinct stage GMSEs is held
at a base law's curve, and L is held at 1 when every run carries the same number of stages of
its family (then L and A are one constant). Both are reported in ``notes``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gmse_cli.errors import FitError
from gmse_cli.figures import save_figure
from gmse_cli.runs import Run
from gmse_cli.spec import Family, Format

__all__ = [
    "FitModel",
    "MODELS",
    "ConstantEstimate",
    "SchemeCapacity",
    "FamilyFit",
    "RunResidual",
    "LosoEntry",
    "FactorizationCell",
    "FactorizationCheck",
    "FitResult",
    "CapacityPoint",
    "CapacityFit",
    "GmseCache",
    "fit",
    "fit_capacity",
    "factorization_check",
    "run_stages",
    "huber",
    "epoch_grid",
    "plot_fit",
    "with_stage_gmse",
]

FitModel = Literal["dense", "decoupled", "unified", "capacity", "kumar"]
MODELS: tuple[str, ...] = ("dense", "decoupled", "unified", "capacity", "kumar")

DEFAULT_HUBER_DELTA = 1e-3  # Hoffmann et al. 2022 / Besiroglu et al. 2024, on log-loss
DEFAULT_CAPACITY_DELTA = 1e-4  # the paper's capacity-shape fits, on rho
_LAW = ("A", "alpha", "B", "beta", "E")
_LAW_INTERNAL = ("logA", "alpha", "logB", "beta", "logE")
_FAMILY_KEYS = ("L", "F", "C")
_Z_LOW, _Z_HIGH = 2.5, 97.5  # percentile interval (95%)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class ConstantEstimate(_Model):
    """One fitted constant: point estimate and, after a bootstrap, its spread."""

    value: float
    sigma: float | None = Field(default=None, description="bootstrap 1-sigma (half the 15.9-84.1% range)")
    low: float | None = Field(default=None, description="bootstrap 2.5% percentile")
    high: float | None = Field(default=None, description="bootstrap 97.5% percentile")
    fixed: bool = Field(default=False, description="held, not fitted")
    source: str = Field(default="fit", description="'fit', 'fixed' (user) or where a held value came from")


class SchemeCapacity(_Model):
    """The capacity of one scheme: fitted (decoupled) or implied by the law (unified, kumar)."""

    scheme: str
    weights: str
    activations: str | None
    rho: float
    rho_low: float | None = None
    rho_high: float | None = None
    sigma: float | None = None
    n_runs: int
    reference: bool = Field(default=False, description="pinned at rho = 1 (the uncompressed baseline)")
    stage_gmse: list[tuple[str, float]] | None = Field(default=None, description="(family, GMSE) of each lossy stage")
    rho_alt_delta: float | None = Field(default=None, description="rho refitted with the other Huber delta (sensitivity)")


class FamilyFit(_Model):
    """A capacity curve rho = L * tanh(F * log_{1/4} GMSE)^C (intervals in FitResult.constants)."""

    L: float
    F: float
    C: float
    held: bool = Field(default=False, description="not identifiable from these runs; held at a base law")
    n_gmse: int = Field(description="distinct stage GMSE values of this family in the data")


class RunResidual(_Model):
    scheme: str
    N: float
    D: float
    loss: float
    predicted: float
    residual: float = Field(description="log(predicted) - log(loss)")
    rho: float


class LosoEntry(_Model):
    """Leave-one-scheme-out: refit without the scheme, predict its runs from its GMSE alone."""

    scheme: str
    n_runs: int
    rmse: float | None = Field(description="RMSE of log-loss on the held-out runs (None: not testable)")
    rho_full: float
    rho_loso: float | None
    note: str = ""


class FactorizationCell(_Model):
    weights: str
    activations: str
    rho: float = Field(description="fitted capacity of the weights x activations scheme")
    rho_weights: float
    rho_activations: float
    product: float
    error: float = Field(description="rho - rho_weights * rho_activations")
    tied: bool = Field(description="activation factor read from the same format applied to weights")


class FactorizationCheck(_Model):
    """Does rho(W, A) = rho(W) * rho(A)? (the paper reports errors around 1e-2)."""

    cells: list[FactorizationCell]
    rms_error: float | None
    max_abs_error: float | None
    rank1_rms: float | None = Field(description="RMS residual of the best rank-1 fit to the W x A grid")
    rank1_dof: int = Field(description="grid cells minus rank-1 parameters (<= 0: not testable)")
    note: str = ""


class FitResult(_Model):
    """Everything a fit produced; ``model_dump(mode='json')`` is the ``--json`` output."""

    model: str
    n_runs: int
    n_schemes: int
    huber_delta: float
    A: float | None
    alpha: float | None
    B: float | None
    beta: float | None
    E: float | None
    fit_error: float = Field(description="RMSE of log-loss over the runs (the paper's fit error)")
    objective: float = Field(description="Huber objective at the optimum")
    constants: dict[str, ConstantEstimate]
    families: dict[str, FamilyFit]
    capacities: list[SchemeCapacity]
    residuals: list[RunResidual]
    loso: list[LosoEntry] | None = None
    factorization: FactorizationCheck | None = None
    capacity_fit_error: float | None = Field(default=None, description="RMSE of rho (capacity model)")
    bootstrap: int
    bootstrap_failed: int = 0
    starts: int
    converged: bool
    seed: int
    data_files: list[str]
    notes: list[str]

    def law_constants(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in _LAW}

    def to_law(self, name: str, *, description: str = "", meta: Mapping[str, str] | None = None):
        """This fit as a :class:`~gmse_cli.law.Law` (with every constant's interval and origin)."""
        from gmse_cli import __version__
        from gmse_cli.law import Constant, FamilyCurve, Law

        if self.model in ("decoupled", "kumar"):
            raise FitError(
                f"a {self.model} fit has no capacity curves to write as a law; use --model unified, "
                "or --model capacity (which fits curves to the decoupled capacities)"
            )
        files = ", ".join(Path(f).name for f in self.data_files) or "given runs"
        how = (f"uscl fit --model {self.model} on {files} ({self.n_runs} runs), Huber delta "
               f"{self.huber_delta:g}, {self.bootstrap} bootstrap refits")

        def const(key: str) -> Constant:
            est = self.constants[key]
            if est.fixed:
                origin = est.source if est.source not in ("fit", "fixed") else "held fixed in the fit"
                provenance = f"{origin}; {how}" if est.source == "fixed" else origin
            else:
                provenance = f"fitted: {how}"
            return Constant(value=est.value, sigma=est.sigma, low=est.low, high=est.high, provenance=provenance)

        families = {
            Family(fam): FamilyCurve(**{k: const(f"{fam}.{k}") for k in _FAMILY_KEYS})
            for fam in self.families
        }
        info = {
            "model": self.model,
            "data": files,
            "runs": str(self.n_runs),
            "huber_delta": f"{self.huber_delta:g}",
            "bootstrap": str(self.bootstrap),
            "seed": str(self.seed),
            "fit_error": f"{self.fit_error:.3e}",
            "date": _dt.date.today().isoformat(),
            "uscl_version": __version__,
        }
        info.update(meta or {})
        return Law(
            name=name,
            description=description or f"fitted by uscl fit --model {self.model}",
            meta=info,
            **{k: const(k) for k in _LAW},
            families=families,
        )


class CapacityPoint(_Model):
    """A scheme's capacity and the (family, GMSE) of each of its lossy stages."""

    name: str
    stages: tuple[tuple[Family, float], ...]
    rho: float
    weight: float = 1.0


class CapacityFit(_Model):
    families: dict[str, FamilyFit]
    constants: dict[str, ConstantEstimate]
    fit_error: float = Field(description="RMSE of rho over the points")
    huber_delta: float
    n_points: int
    predicted: list[float]
    bootstrap: int
    notes: list[str]


# --------------------------------------------------------------------------------------------
# Huber and the batched optimizer
# --------------------------------------------------------------------------------------------


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """0.5 r^2 inside |r| <= delta, delta * (|r| - delta / 2) outside."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(r: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(r, -delta, delta)


def _two_loop(g, s_hist, y_hist, rho_hist, count, head, m):
    """L-BFGS direction -H g for each row, histories in ring buffers of length m."""
    k = g.shape[0]
    rows = np.arange(k)
    q = g.copy()
    alphas = np.zeros((m, k))
    for j in range(m):  # newest to oldest
        pos = (head - 1 - j) % m
        valid = j < count
        s = s_hist[rows, pos]
        y = y_hist[rows, pos]
        a = np.where(valid, rho_hist[rows, pos] * np.einsum("ij,ij->i", s, q), 0.0)
        alphas[j] = a
        q -= a[:, None] * y
    newest = (head - 1) % m
    s = s_hist[rows, newest]
    y = y_hist[rows, newest]
    yy = np.einsum("ij,ij->i", y, y)
    gamma = np.where(count > 0, np.einsum("ij,ij->i", s, y) / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for j in range(m - 1, -1, -1):  # oldest to newest
        pos = (head - 1 - j) % m
        valid = j < count
        s = s_hist[rows, pos]
        y = y_hist[rows, pos]
        b = np.where(valid, rho_hist[rows, pos] * np.einsum("ij,ij->i", y, r), 0.0)
        r += (alphas[j] - b)[:, None] * s
    return -r


_two_loop_kernel = None


def _two_loop_numba(g, s_hist, y_hist, rho_hist, count, head, idx, m):
    """:func:`_two_loop` for rows ``idx`` of the full history arrays, without gathering copies."""
    global _two_loop_kernel
    if _two_loop_kernel is None:
        import numba

        @numba.njit(cache=True)
        def kernel(g, s_hist, y_hist, rho_hist, count, head, idx, m):  # pragma: no cover - compiled
            k, P = g.shape
            out = np.empty((k, P))
            alphas = np.empty(m)
            q = np.empty(P)
            for r in range(k):
                row = idx[r]
                for p in range(P):
                    q[p] = g[r, p]
                n_pairs = count[row]
                for j in range(n_pairs):  # newest to oldest
                    pos = (head[row] - 1 - j) % m
                    dot = 0.0
                    for p in range(P):
                        dot += s_hist[row, pos, p] * q[p]
                    a = rho_hist[row, pos] * dot
                    alphas[j] = a
                    for p in range(P):
                        q[p] -= a * y_hist[row, pos, p]
                gamma = 1.0
                if n_pairs > 0:
                    pos = (head[row] - 1) % m
                    sy = 0.0
                    yy = 0.0
                    for p in range(P):
                        sy += s_hist[row, pos, p] * y_hist[row, pos, p]
                        yy += y_hist[row, pos, p] * y_hist[row, pos, p]
                    if yy > 0:
                        gamma = sy / yy
                for p in range(P):
                    q[p] *= gamma
                for j in range(n_pairs - 1, -1, -1):  # oldest to newest
                    pos = (head[row] - 1 - j) % m
                    dot = 0.0
                    for p in range(P):
                        dot += y_hist[row, pos, p] * q[p]
                    b = rho_hist[row, pos] * dot
                    for p in range(P):
                        q[p] += (alphas[j] - b) * s_hist[row, pos, p]
                for p in range(P):
                    out[r, p] = -q[p]
            return out

        _two_loop_kernel = kernel
    return _two_loop_kernel(g, s_hist, y_hist, rho_hist, count, head, idx, m)


def _batched_lbfgs(fun, x0: np.ndarray, *, max_iter: int = 1000, history: int = 10,
                   ftol: float = 1e-10, gtol: float = 1e-10, max_step: float = 5.0,
                   max_backtracks: int = 40, merge_every: int = 10, merge_tol: float = 1e-4):
    """Minimize independent problems, one per row of ``x0``, with L-BFGS and Armijo backtracking.

    ``fun(x, rows)`` returns ``(f, g)`` for the rows ``rows`` of the batch (``x`` holds those rows
    only), so each problem may carry its own data (bootstrap weights). A row stops when its
    objective decreases by less than ``ftol * max(|f|, 1e-300)`` in an iteration, when its largest
    gradient entry is below ``gtol * max(|f|, 1e-300)`` (both scale-free: Huber objectives on
    log-loss are tiny numbers), when no step along its direction decreases it, or at
    ``max_iter``. Every ``merge_every`` iterations, rows that have reached the same point (all
    coordinates within ``merge_tol``, relative) are merged: the copies stop, since they sit in
    the same basin and would end at the same minimum (most of a grid's starts do). Returns ``(x, f, iterations, converged)``.
    """
    x = np.array(x0, dtype=float)
    S, P = x.shape
    m = history
    f, g = fun(x, np.arange(S))
    f = np.where(np.isfinite(f), f, np.inf)
    active = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    g = np.where(np.isfinite(g), g, 0.0)
    converged = np.zeros(S, dtype=bool)
    iters = np.zeros(S, dtype=int)
    s_hist = np.zeros((S, m, P))
    y_hist = np.zeros((S, m, P))
    rho_hist = np.zeros((S, m))
    count = np.zeros(S, dtype=int)
    head = np.zeros(S, dtype=int)
    tiny = 1e-300
    for it in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        if merge_every and it and it % merge_every == 0 and idx.size > 1:
            key = np.round(x[idx] / (merge_tol * np.maximum(np.abs(x[idx]), 1.0)))
            _, first = np.unique(key, axis=0, return_index=True)
            copies = np.setdiff1d(np.arange(idx.size), first)
            if copies.size:
                active[idx[copies]] = False
                idx = idx[np.sort(first)]
        gi = g[idx]
        d = _two_loop_numba(gi, s_hist, y_hist, rho_hist, count, head, idx, m)
        slope = np.einsum("ij,ij->i", gi, d)
        bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
        if bad.any():  # not a descent direction: restart from steepest descent
            d[bad] = -gi[bad]
            count[idx[bad]] = 0
            slope[bad] = -np.einsum("ij,ij->i", gi[bad], gi[bad])
        # First step (no curvature yet) and overly long steps are capped in the max norm.
        norm = np.max(np.abs(d), axis=1)
        cap = np.where(count[idx] == 0, 1.0, max_step)
        scale = np.minimum(1.0, cap / np.maximum(norm, tiny))
        d *= scale[:, None]
        slope *= scale
        t = np.ones(idx.size)
        pending = np.arange(idx.size)
        new_x = np.empty((idx.size, P))
        new_f = np.full(idx.size, np.inf)
        new_g = np.zeros((idx.size, P))
        accepted = np.zeros(idx.size, dtype=bool)
        for _ in range(max_backtracks):
            rows = idx[pending]
            trial = x[rows] + t[pending, None] * d[pending]
            ft, gt = fun(trial, rows)
            ok = np.isfinite(ft) & (ft <= f[rows] + 1e-4 * t[pending] * slope[pending]) & np.all(np.isfinite(gt), axis=1)
            done = pending[ok]
            new_x[done], new_f[done], new_g[done] = trial[ok], ft[ok], gt[ok]
            accepted[done] = True
            pending = pending[~ok]
            if pending.size == 0:
                break
            t[pending] *= 0.25 if np.any(~np.isfinite(ft[~ok])) else 0.5
        # Rows with no acceptable step have reached the optimizer's resolution.
        stuck = idx[~accepted]
        active[stuck] = False
        converged[stuck] = True
        acc = np.flatnonzero(accepted)
        if acc.size == 0:
            continue
        rows = idx[acc]
        s = new_x[acc] - x[rows]
        y = new_g[acc] - g[rows]
        sy = np.einsum("ij,ij->i", s, y)
        keep = sy > 1e-12 * np.sqrt(np.einsum("ij,ij->i", s, s) * np.einsum("ij,ij->i", y, y)) + tiny
        kr = rows[keep]
        pos = head[kr]
        s_hist[kr, pos] = s[keep]
        y_hist[kr, pos] = y[keep]
        rho_hist[kr, pos] = 1.0 / sy[keep]
        head[kr] = (pos + 1) % m
        count[kr] = np.minimum(count[kr] + 1, m)
        decrease = f[rows] - new_f[acc]
        x[rows], f[rows], g[rows] = new_x[acc], new_f[acc], new_g[acc]
        iters[rows] += 1
        scale_f = np.maximum(np.abs(f[rows]), tiny)
        stop = (decrease <= ftol * scale_f) | (np.max(np.abs(g[rows]), axis=1) <= gtol * scale_f)
        active[rows[stop]] = False
        converged[rows[stop]] = True
    return x, f, iters, converged


# --------------------------------------------------------------------------------------------
# Objectives: the law and the capacity parts
# --------------------------------------------------------------------------------------------


class _NoCapacity:
    names: tuple[str, ...] = ()

    def logrho(self, c, alpha=None):
        return np.zeros((c.shape[0], 1))

    def backprop(self, c, u, alpha=None):
        return np.zeros((c.shape[0], 0)), None


class _DecoupledPart:
    """Each run's scheme carries a free capacity; the reference scheme is pinned at rho = 1.

    Parametrized by the shift phi_s = alpha * log rho_s of the A term's exponent, not by
    log rho_s: the loss sees log rho only through alpha * log rho, so with a small alpha the
    raw log-capacities are badly scaled against the law and strongly coupled to alpha (L-BFGS
    then needs thousands of iterations); in phi the problem is nearly separable.
    """

    uses_alpha = True

    def __init__(self, scheme_of_run: np.ndarray, schemes: Sequence[str], reference: int):
        self.free = [i for i in range(len(schemes)) if i != reference]
        self.names = tuple(f"phi:{schemes[i]}" for i in self.free)
        column = {s: j + 1 for j, s in enumerate(self.free)}  # column 0: the reference, phi = 0
        self.column = np.array([column.get(int(s), 0) for s in scheme_of_run], dtype=int)
        # Runs sorted by column, for segment sums in backprop (no BLAS: tiny matmuls on a
        # busy machine cost more in thread hand-offs than in arithmetic).
        self.order = np.argsort(self.column, kind="stable")
        sorted_cols = self.column[self.order]
        self.starts = np.searchsorted(sorted_cols, np.arange(1, len(self.free) + 1))

    def _phi(self, c):
        return np.hstack([np.zeros((c.shape[0], 1)), c])[:, self.column]

    def logrho(self, c, alpha):
        return self._phi(c) / alpha[:, None]

    def backprop(self, c, u, alpha):
        """Gradients for phi, and the extra alpha gradient through log rho = phi / alpha."""
        phi = self._phi(c)
        seg = np.add.reduceat(u[:, self.order], self.starts, axis=1) if len(self.free) else np.zeros((c.shape[0], 0))
        return seg / alpha[:, None], -(u * phi).sum(axis=1) / alpha**2


class _StagePart:
    """log rho = sum over a run's lossy stages of log L_f + C_f log tanh(F_f * bits).

    ``incidence[u, i]`` counts how often unique stage ``u`` (a family and a GMSE) occurs in
    item ``i`` (a run, or a capacity point); parameters per family: log L, log F, log C.
    """

    def __init__(self, families: Sequence[str], stage_family: np.ndarray, stage_bits: np.ndarray,
                 incidence: np.ndarray):
        self.families = list(families)
        self.names = tuple(f"{fam}.log{k}" for fam in families for k in _FAMILY_KEYS)
        self.fam = stage_family
        self.bits = stage_bits
        self.lossless = ~np.isfinite(stage_bits)  # GMSE == 0: tanh(inf) = 1
        self.bits_finite = np.where(self.lossless, 1.0, stage_bits)
        self.incidence = incidence
        nf = len(families)
        self.fam_onehot = np.zeros((len(stage_family), nf))
        self.fam_onehot[np.arange(len(stage_family)), stage_family] = 1.0

    def _stage_terms(self, c):
        logL = c[:, 0::3][:, self.fam]
        F = np.exp(c[:, 1::3])[:, self.fam]
        C = np.exp(c[:, 2::3])[:, self.fam]
        z = F * self.bits_finite
        T = np.tanh(z)
        # tanh underflows only for absurd trial shapes; a floor keeps -inf * 0 out of the sums.
        logT = np.where(self.lossless, 0.0, np.log(np.maximum(T, 1e-300)))
        return logL, F, C, z, T, logT

    def logrho(self, c, alpha=None):
        logL, _, C, _, _, logT = self._stage_terms(c)
        return (logL + C * logT) @ self.incidence

    def backprop(self, c, u, alpha=None):
        _, _, C, z, T, logT = self._stage_terms(c)
        us = u @ self.incidence.T  # (k, stages)
        # d/dlogF of C log tanh(z) = C z (1 - T^2) / T = C * 2z / sinh(2z)
        two_z = 2.0 * z
        dF = np.where(self.lossless, 0.0, C * np.where(two_z < 1e-8, 1.0, two_z / np.sinh(np.minimum(two_z, 700.0))))
        dC = C * logT
        out = np.empty((c.shape[0], c.shape[1]))
        out[:, 0::3] = us @ self.fam_onehot
        out[:, 1::3] = (us * dF) @ self.fam_onehot
        out[:, 2::3] = (us * dC) @ self.fam_onehot
        return out, None


class _KumarPart:
    """log rho = sum_x log(1 - exp(-P_x / gamma_x)), x in (weights, activations)."""

    names = ("logGamma_w", "logGamma_a")

    def __init__(self, w_bits: np.ndarray, a_bits: np.ndarray):
        self.bits = np.stack([w_bits, a_bits])  # (2, n)

    def logrho(self, c, alpha=None):
        z = self.bits[None, :, :] / np.exp(c)[:, :, None]  # (k, 2, n)
        return np.log(-np.expm1(-z)).sum(axis=1)

    def backprop(self, c, u, alpha=None):
        z = self.bits[None, :, :] / np.exp(c)[:, :, None]
        return np.einsum("kn,kxn->kx", u, -z / np.expm1(z)), None


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
    u = _huber_grad(r, delta) * weights
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
        import numba

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


class _LossObjective:
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
        self.names = _LAW_INTERNAL + tuple(part.names)
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


class _CapacityObjective:
    """Huber on rho residuals of per-family capacity curves (targets may differ per row)."""

    def __init__(self, part: _StagePart, target: np.ndarray, delta: float):
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
        u = _huber_grad(r, self.delta)
        if weights is not None:
            h, u = h * weights, u * weights
        return h.sum(axis=1), self.part.backprop(theta, u * rho)[0]


# --------------------------------------------------------------------------------------------
# Solving: fixed parameters, grids of starts, polish, bootstrap
# --------------------------------------------------------------------------------------------


def epoch_grid() -> np.ndarray:
    """Besiroglu et al.'s grid of starts in (log A, alpha, log B, beta, log E): 4,500 points."""
    alpha = np.arange(0.0, 2.5, 0.5)
    beta = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 1.5, 0.5)
    a = np.arange(0.0, 30.0, 5.0)
    b = np.arange(0.0, 30.0, 5.0)
    return np.array([(ai, al, bi, be, ei) for al, be, ei, ai, bi in itertools.product(alpha, beta, e, a, b)])


def _coarse_law_grid() -> np.ndarray:
    """162 law starts for the models that add capacity parameters (their grid multiplies).

    On the QuEST runs this finds the same optimum as a 1,600-point grid for the decoupled,
    unified and kumar models, at a tenth of the time.
    """
    vals = itertools.product([0.1, 0.3, 0.9], [0.1, 0.3, 0.9], [-0.5, 0.5], [0.0, 8.0, 16.0], [0.0, 8.0, 16.0])
    return np.array([(a, al, b, be, e) for al, be, e, a, b in vals])


class _Problem:
    """An objective with some parameters held fixed; works on the free coordinates."""

    def __init__(self, objective, fixed: Mapping[int, float]):
        self.objective = objective
        self.P = len(objective.names)
        self.fixed = dict(fixed)
        self.free = np.array([j for j in range(self.P) if j not in self.fixed], dtype=int)

    def full(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        theta = np.empty((x.shape[0], self.P))
        for j, v in self.fixed.items():
            theta[:, j] = v
        theta[:, self.free] = x
        return theta

    def fun(self, weights=None, mask=None, **extra):
        def evaluate(x, rows):
            w = None if weights is None else weights[rows]
            kw = {k: v[rows] for k, v in extra.items()}
            f, g = self.objective.value_grad(self.full(x), w, **kw) if (w is not None or kw) else \
                self.objective.value_grad(self.full(x))
            g = g[:, self.free]
            if mask is not None:
                g = g * mask[rows]
            return f, g

        return evaluate

    def polish(self, x0: np.ndarray, weights=None, *, maxiter: int = 15000):
        """Scipy's L-BFGS-B on one problem: the reference optimizer, tight tolerances."""
        from scipy.optimize import minimize

        fun = self.fun(None if weights is None else weights[None, :])
        rows = np.zeros(1, dtype=int)
        f0 = fun(x0[None, :], rows)[0][0]
        scale = 1.0 / max(abs(f0), 1e-300)  # scipy's tolerances are absolute; make f ~ 1

        def fg(x):
            f, g = fun(x[None, :], rows)
            return float(f[0]) * scale, g[0] * scale

        res = minimize(fg, x0, jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20})
        x = res.x if res.fun <= 1.0 else x0  # never return something worse than the start
        return x, fun(x[None, :], rows)[0][0], bool(res.success or res.nit > 0)


def _percentiles(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, q16, q84, hi = np.percentile(samples, [_Z_LOW, 15.865525, 84.134475, _Z_HIGH], axis=0)
    return lo, hi, (q84 - q16) / 2.0


def _bootstrap_weights(groups: np.ndarray, K: int, rng: np.random.Generator) -> np.ndarray:
    """(K, n) resampling counts, resampling runs within each group (scheme) separately.

    Stratifying keeps every scheme in every replicate, so a free capacity never loses its data.
    """
    n = len(groups)
    W = np.zeros((K, n))
    for gval in np.unique(groups):
        idx = np.flatnonzero(groups == gval)
        draws = rng.integers(0, len(idx), size=(K, len(idx)))
        rows = np.repeat(np.arange(K), len(idx))
        np.add.at(W, (rows, idx[draws].ravel()), 1.0)
    return W


def _multistart(problem: _Problem, starts: np.ndarray, *, weights=None, grid_iter: int = 300,
                finalists: int = 4, final_iter: int = 3000):
    """L-BFGS from every start, then the best few to convergence, then polish the best.

    The grid stage runs every start (batched) for at most ``grid_iter`` iterations: enough to
    settle each start into its basin (a Chinchilla start needs about 100-200), not to finish a
    badly conditioned one. The ``finalists`` best distinct rows then continue for up to
    ``final_iter`` iterations, and scipy's L-BFGS-B polishes the winner.
    """
    x0 = np.unique(starts[:, problem.free], axis=0)
    fun = problem.fun(None if weights is None else np.broadcast_to(weights, (len(x0), len(weights))))
    x, f, _, _ = _batched_lbfgs(fun, x0, max_iter=grid_iter)
    finite = np.flatnonzero(np.isfinite(f))
    if finite.size == 0:
        raise FitError("the fit did not converge: no start reached a finite objective")
    order = finite[np.argsort(f[finite])]
    key = np.round(x[order] / (1e-3 * np.maximum(np.abs(x[order]), 1.0)))
    _, first = np.unique(key, axis=0, return_index=True)
    pick = order[np.sort(first)[:finalists]]
    fun = problem.fun(None if weights is None else np.broadcast_to(weights, (len(pick), len(weights))))
    xf, ff, _, _ = _batched_lbfgs(fun, x[pick], max_iter=final_iter)
    best = int(np.argmin(ff))
    xp, fp, _ = problem.polish(xf[best], weights)
    if not fp <= ff[best]:
        xp, fp = xf[best], ff[best]
    return xp, fp, len(x0), True


# --------------------------------------------------------------------------------------------
# GMSE of stages (cached)
# --------------------------------------------------------------------------------------------


class GmseCache:
    """GMSE of stage formats, computed once per distinct stage within a fit.

    ``values`` pre-seeds the cache by stage display name or format name (tests, or GMSEs a
    training record already carries). Monte Carlo estimates share one sample bank.
    """

    def __init__(self, *, rel_err: float = 1e-3, seed: int = 0, values: Mapping[str, float] | None = None,
                 estimator: Callable[[Format], float] | None = None):
        self.rel_err = rel_err
        self.seed = seed
        self.values = dict(values or {})
        self.estimator = estimator
        self._cache: dict[str, float] = {}
        self._bank = None

    def __call__(self, fmt: Format) -> float:
        key = fmt.model_dump_json(exclude={"name", "description"})
        if key in self._cache:
            return self._cache[key]
        for name in (fmt.name, fmt.display_name):
            if name in self.values:
                self._cache[key] = float(self.values[name])
                return self._cache[key]
        if self.estimator is not None:
            value = float(self.estimator(fmt))
        else:
            from gmse_cli.gmse import SampleBank, estimate_gmse

            if self._bank is None:
                self._bank = SampleBank(seed=self.seed)
            value = estimate_gmse([fmt], rel_err=self.rel_err, seed=self.seed, bank=self._bank)[0].gmse
        self._cache[key] = value
        return value


def run_stages(run: Run, gmse: Callable[[Format], float], *, use_recorded: bool = True) -> list[tuple[Family, float]]:
    """(family, GMSE) of every lossy stage of a run's weights and activations.

    GMSEs a training record carries (``run.stage_gmse``) are used as recorded unless
    ``use_recorded`` is False; everything else goes through ``gmse``.
    """
    parts = [(fam, part) for fmt in (run.weight_format(), run.activation_format()) if fmt is not None
             for fam, part in fmt.stage_formats()]
    recorded = run.stage_gmse if use_recorded else None
    if recorded is not None and [Family(f) for f, _ in recorded] != [f for f, _ in parts]:
        recorded = None  # the record does not match the format's stages: recompute
    stages: list[tuple[Family, float]] = []
    for k, (family, part) in enumerate(parts):
        value = recorded[k][1] if recorded is not None else gmse(part)
        if not value < 1.0:
            raise FitError(
                f"scheme '{run.scheme}': stage {part.display_name} has GMSE {value:.3g} >= 1 "
                "(it keeps nothing), so its capacity is 0 and log-loss cannot be fitted"
            )
        stages.append((family, value))
    return stages


def _bits(gmse: float) -> float:
    return math.inf if gmse <= 0 else -math.log(gmse) / math.log(4.0)


def _stage_structure(items: Sequence[Sequence[tuple[Family, float]]], families: Sequence[str]):
    """Unique (family, GMSE) stages and their incidence counts over items."""
    keys: dict[tuple[str, float], int] = {}
    entries: list[tuple[int, int]] = []
    for i, stages in enumerate(items):
        for family, value in stages:
            key = (Family(family).value, float(value))
            if key not in keys:
                keys[key] = len(keys)
            entries.append((keys[key], i))
    U = len(keys)
    incidence = np.zeros((U, len(items)))
    for u, i in entries:
        incidence[u, i] += 1.0
    fam_index = {f: j for j, f in enumerate(families)}
    stage_family = np.array([fam_index[f] for f, _ in keys], dtype=int)
    stage_bits = np.array([_bits(v) for _, v in keys])
    return stage_family, stage_bits, incidence


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_runs(runs: Sequence[Run], model: str, n_free: int, *, law_free: Sequence[str]) -> None:
    n = len(runs)
    if n == 0:
        raise FitError("no runs to fit (check the files and the --where / --exclude-worst selection)")
    need = n_free + 1
    if n < need:
        raise FitError(
            f"a {model} fit has {n_free} free constants and needs at least {need} runs; got {n} "
            "(add runs, or hold constants fixed)"
        )
    sizes = len({r.N for r in runs})
    tokens = len({r.D for r in runs})
    if ("alpha" in law_free or "A" in law_free) and sizes < 3:
        raise FitError(f"a {model} fit needs runs at 3 or more model sizes N to fit A and alpha; got {sizes}")
    if ("beta" in law_free or "B" in law_free) and tokens < 3:
        raise FitError(f"a {model} fit needs runs at 3 or more token counts D to fit B and beta; got {tokens}")


def _schemes(runs: Sequence[Run]) -> tuple[list[str], np.ndarray]:
    names: list[str] = []
    index: dict[str, int] = {}
    of_run = np.empty(len(runs), dtype=int)
    for i, r in enumerate(runs):
        if r.scheme not in index:
            index[r.scheme] = len(names)
            names.append(r.scheme)
        of_run[i] = index[r.scheme]
    return names, of_run


def _reference(runs: Sequence[Run], schemes: Sequence[str], of_run: np.ndarray) -> int:
    dense = [j for j, s in enumerate(schemes) if runs[int(np.flatnonzero(of_run == j)[0])].is_dense]
    if not dense:
        raise FitError(
            "a decoupled fit needs runs of an uncompressed reference scheme (bf16, fp16 or fp32 weights, "
            f"no activation format) to pin rho = 1; schemes present: {', '.join(schemes)}"
        )
    # Prefer bf16, then the most runs.
    return max(dense, key=lambda j: (schemes[j] == "bf16", int(np.sum(of_run == j))))


_CONSTANT_NAMES = {"A": "logA", "B": "logB", "E": "logE", "alpha": "alpha", "beta": "beta"}


def _internal_fixed(fixed: Mapping[str, float] | None, names: Sequence[str]) -> dict[int, float]:
    """User names ('A', 'alpha', 'quantization.L', 'gamma_w') -> internal index and value."""
    out: dict[int, float] = {}
    for key, value in (fixed or {}).items():
        value = float(value)
        if key in _CONSTANT_NAMES:
            internal = _CONSTANT_NAMES[key]
        elif key in ("gamma_w", "gamma_a"):
            internal = "logGamma_" + key[-1]
        elif "." in key and key.rsplit(".", 1)[1] in _FAMILY_KEYS:
            fam, k = key.rsplit(".", 1)
            internal = f"{fam}.log{k}"
        else:
            raise FitError(f"fixed constant '{key}' is not a constant of this model (known: {', '.join(_public_names(names))})")
        if internal not in names:
            raise FitError(f"fixed constant '{key}' is not a constant of this model (known: {', '.join(_public_names(names))})")
        if _is_log(internal):
            if not value > 0:
                raise FitError(f"fixed constant {key} = {value} must be positive")
            value = math.log(value)
        out[names.index(internal)] = value
    return out


def _public_name(internal: str) -> str:
    if internal in _LAW_INTERNAL:
        return _LAW[_LAW_INTERNAL.index(internal)]
    if internal.startswith("phi:"):
        return internal
    if internal.startswith("logGamma_"):
        return "gamma_" + internal[-1]
    fam, k = internal.rsplit(".", 1)
    return f"{fam}.{k[3:]}"


def _public_names(names: Sequence[str]) -> list[str]:
    return [_public_name(n) for n in names if not n.startswith("phi:")]


def _is_log(internal: str) -> bool:
    """Parameters fitted through their logarithm: log A, log B, log E, log gamma, family.logL/F/C."""
    return not internal.startswith("phi:") and internal.rsplit(".", 1)[-1].startswith("log")


def _public_values(names: Sequence[str], theta: np.ndarray) -> np.ndarray:
    """Internal coordinates -> natural values (exp of the log-parametrized ones)."""
    theta = np.atleast_2d(theta)
    out = theta.copy()
    for j, n in enumerate(names):
        if _is_log(n):
            out[:, j] = np.exp(theta[:, j])
    return out


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


def _validate_options(model: str, huber_delta: float, bootstrap: int) -> None:
    if model not in MODELS:
        raise FitError(f"unknown model '{model}' (expected one of {', '.join(MODELS)})")
    if not (huber_delta > 0 and math.isfinite(huber_delta)):
        raise FitError(f"--huber-delta {huber_delta} must be a positive number (1e-3 is Chinchilla's)")
    if bootstrap < 0:
        raise FitError(f"--bootstrap {bootstrap} must not be negative")


def fit(
    runs: Sequence[Run],
    *,
    model: FitModel = "dense",
    huber_delta: float | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    fixed: Mapping[str, float] | None = None,
    base_law=None,
    gmse: Callable[[Format], float] | None = None,
    starts: np.ndarray | None = None,
    loso: bool = True,
    sensitivity: bool = True,
    capacity_delta: float = DEFAULT_CAPACITY_DELTA,
    bootstrap_starts: int = 2,
    data_files: Sequence[str] = (),
) -> FitResult:
    """Fit ``model`` to ``runs``; see the module docstring for the models.

    - ``huber_delta``: Huber threshold on log-loss residuals (default 1e-3).
    - ``bootstrap``: K refits on runs resampled within each scheme; every constant (and every
      decoupled capacity) gets a 95% percentile interval and a 1-sigma.
    - ``fixed``: constants held at given values, by public name: ``A``, ``alpha``, ``B``,
      ``beta``, ``E``, ``quantization.L`` ..., ``gamma_w``, ``gamma_a``.
    - ``base_law``: a :class:`~gmse_cli.law.Law` whose capacity curves are used for families the
      runs cannot identify (fewer than 3 distinct GMSE values).
    - ``gmse``: stage GMSE provider (default: a :class:`GmseCache` on the GMSE engine).
    - ``starts``: (S, 5) law starts in (log A, alpha, log B, beta, log E); default: Epoch's grid
      (4,500 points) for dense fits, a 162-point grid otherwise (times capacity-parameter starts).
    - ``bootstrap_starts``: starts per bootstrap replicate (the full-data optimum plus random
      grid points).
    """
    delta = DEFAULT_HUBER_DELTA if huber_delta is None else float(huber_delta)
    _validate_options(model, delta, bootstrap)
    if model == "capacity":
        return _fit_capacity_model(list(runs), delta=delta, bootstrap=bootstrap, seed=seed, fixed=fixed,
                                   base_law=base_law, gmse=gmse, starts=starts, capacity_delta=capacity_delta,
                                   data_files=data_files, bootstrap_starts=bootstrap_starts)
    return _fit_loss_model(list(runs), model=model, delta=delta, bootstrap=bootstrap, seed=seed, fixed=fixed,
                           base_law=base_law, gmse=gmse, starts=starts, loso=loso, sensitivity=sensitivity,
                           bootstrap_starts=bootstrap_starts, data_files=data_files)[0]


def _fit_loss_model(runs, *, model, delta, bootstrap, seed, fixed, base_law, gmse, starts, loso, sensitivity,
                    bootstrap_starts, data_files) -> tuple[FitResult, dict[str, np.ndarray]]:
    """The dense, decoupled, unified and kumar fits; also returns each scheme's bootstrap rho."""
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    schemes, of_run = _schemes(runs)
    logN = np.log([r.N for r in runs])
    logD = np.log([r.D for r in runs])
    y = np.log([r.loss for r in runs])
    held: dict[int, tuple[float, str]] = {}  # internal index -> (value, where it came from)
    family_info: dict[str, int] = {}
    stages_of_run: list[list[tuple[Family, float]]] | None = None
    reference = None

    if model == "dense":
        part = _NoCapacity()
        if len(schemes) > 1:
            notes.append(f"dense fit pools {len(schemes)} schemes as if uncompressed (rho = 1)")
    elif model == "decoupled":
        reference = _reference(runs, schemes, of_run)
        for j, s in enumerate(schemes):
            sizes = {runs[i].N for i in np.flatnonzero(of_run == j)}
            if len(sizes) < 2 and j != reference:
                raise FitError(
                    f"scheme '{s}' has runs at one model size only (N = {next(iter(sizes)):.4g}); a decoupled "
                    f"capacity needs 2 or more sizes (add runs, or drop it with --where 'scheme!={s}')"
                )
        part = _DecoupledPart(of_run, schemes, reference)
    elif model == "kumar":
        part = _KumarPart(np.array([r.w_bits for r in runs]), np.array([r.a_bits for r in runs]))
        if any(f.sparsifier is not None for r in runs for f in (r.weight_format(), r.activation_format()) if f):
            notes.append("kumar's law sees only precision: the sparsity of sparse schemes is ignored")
    else:  # unified
        gmse = gmse or GmseCache(seed=seed)
        stages_of_run = [run_stages(r, gmse) for r in runs]
        families = sorted({f.value for st in stages_of_run for f, _ in st})
        if not families:
            raise FitError("a unified fit needs compressed runs (every run here is lossless)")
        stage_family, stage_bits, incidence = _stage_structure(stages_of_run, families)
        part = _StagePart(families, stage_family, stage_bits, incidence)
        for j, fam in enumerate(families):
            family_info[fam] = len({b for b, sf in zip(stage_bits, stage_family, strict=True) if sf == j})
        names = list(_LAW_INTERNAL + part.names)
        held.update(_hold_unidentified(families, family_info, incidence, stage_family, base_law, names, notes,
                                       _internal_fixed(fixed, names)))

    names = list(_LAW_INTERNAL + tuple(part.names))
    user_fixed = _internal_fixed(fixed, names)
    fixed_pub = {**{j: v for j, (v, _) in held.items()}, **user_fixed}
    objective = _centered_objective(logN, logD, y, part, delta, fixed_pub)
    fixed_all = _fixed_internal(objective, fixed_pub)
    problem = _Problem(objective, fixed_all)
    law_free = [_LAW[j] for j in range(5) if j not in fixed_all]
    _check_runs(runs, model, len(problem.free), law_free=law_free)

    law_starts = (epoch_grid() if model == "dense" else _coarse_law_grid()) if starts is None else np.atleast_2d(starts)
    full_starts = objective.from_public(_expand_starts(model, law_starts, part, names))
    x, fval, n_starts, ok = _multistart(problem, full_starts)
    theta = problem.full(x)[0]
    converged = _converged(problem, x)
    if not converged:
        raise FitError(
            f"the {model} fit did not converge (gradient still large at the best of {n_starts} starts); "
            "try --huber-delta 1 (least squares), fewer free constants, or more runs"
        )

    # -- bootstrap ---------------------------------------------------------------------------
    boot_theta = None
    failed = 0
    if bootstrap > 0:
        W = _bootstrap_weights(of_run, bootstrap, rng)
        boot_theta, failed = _bootstrap(problem, x, W, full_starts, rng, bootstrap_starts)
        if failed:
            notes.append(f"{failed} of {bootstrap} bootstrap refits failed and were dropped")

    constants = _constants(names, objective.to_public(theta)[0],
                           None if boot_theta is None else objective.to_public(boot_theta), fixed_all, held, user_fixed)
    if 4 not in fixed_all and constants["E"].value < 1e-6 * float(np.exp(y).min()):
        notes.append(f"E went to its lower bound 0 (E = {constants['E'].value:.2g}): these runs do not identify an "
                     "irreducible loss, and E's interval means nothing; consider --fix E=VALUE")
    pred = objective.predict(theta)[0]
    logrho = objective.logrho(theta)[0]
    resid = pred - y
    fit_error = float(np.sqrt(np.mean(resid**2)))
    residuals = [
        RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=float(np.exp(p)), residual=float(e),
                    rho=float(np.exp(lr)))
        for r, p, e, lr in zip(runs, pred, resid, logrho, strict=True)
    ]

    # -- capacities --------------------------------------------------------------------------
    capacities: list[SchemeCapacity] = []
    boot_logrho = objective.logrho(boot_theta) if boot_theta is not None and model != "dense" else None
    for j, s in enumerate(schemes if model != "dense" else []):
        members = np.flatnonzero(of_run == j)
        first = runs[int(members[0])]
        rho = float(np.exp(logrho[members[0]]))
        lo = hi = sig = None
        if boot_logrho is not None and j != reference:
            lo_, hi_, sig_ = _percentiles(np.exp(boot_logrho[:, members[0]]))
            lo, hi, sig = float(lo_), float(hi_), float(sig_)
        capacities.append(SchemeCapacity(
            scheme=s, weights=first.weights, activations=first.activations, rho=rho, rho_low=lo, rho_high=hi,
            sigma=sig, n_runs=len(members), reference=j == reference,
            stage_gmse=[(f.value, g) for f, g in stages_of_run[members[0]]] if stages_of_run else None,
        ))

    families_out: dict[str, FamilyFit] = {}
    if model == "unified":
        for fam in part.families:
            families_out[fam] = FamilyFit(
                L=constants[f"{fam}.L"].value, F=constants[f"{fam}.F"].value, C=constants[f"{fam}.C"].value,
                held=all(constants[f"{fam}.{k}"].fixed for k in _FAMILY_KEYS), n_gmse=family_info[fam],
            )

    loso_out = None
    if model == "unified" and loso:
        loso_out = _loso(problem, x, runs, schemes, of_run, part, family_info, base_law, logrho, notes)
    fact = None
    if model == "decoupled":
        fact = factorization_check(capacities)
        if sensitivity:
            capacities = _delta_sensitivity(runs, capacities, delta, problem, x, part, logN, logD, y, notes,
                                            reference, of_run)

    replicates = {} if boot_logrho is None else {
        s: np.exp(boot_logrho[:, int(np.flatnonzero(of_run == j)[0])]) for j, s in enumerate(schemes)}
    result = FitResult(
        model=model, n_runs=len(runs), n_schemes=len(schemes), huber_delta=delta,
        **{k: constants[k].value for k in _LAW},
        fit_error=fit_error, objective=float(fval), constants=constants, families=families_out,
        capacities=capacities, residuals=residuals, loso=loso_out, factorization=fact,
        bootstrap=bootstrap, bootstrap_failed=failed, starts=n_starts, converged=converged, seed=seed,
        data_files=list(data_files) or sorted({r.source for r in runs if r.source}), notes=notes,
    )
    return result, replicates


def _centered_objective(logN, logD, y, part, delta, fixed_pub: Mapping[int, float]) -> _LossObjective:
    """Center log N unless A is held while alpha is free (centering would tie them); same for D."""
    center_n = not (0 in fixed_pub and 1 not in fixed_pub)
    center_d = not (2 in fixed_pub and 3 not in fixed_pub)
    return _LossObjective(logN, logD, y, part, delta, center=(center_n, center_d))


def _fixed_internal(objective: _LossObjective, fixed_pub: Mapping[int, float]) -> dict[int, float]:
    out = dict(fixed_pub)
    if 0 in out:
        out[0] = out[0] - out.get(1, 0.0) * objective.cN
    if 2 in out:
        out[2] = out[2] - out.get(3, 0.0) * objective.cD
    return out


def _expand_starts(model: str, law_starts: np.ndarray, part, names: Sequence[str]) -> np.ndarray:
    """Law starts x starting values of the capacity parameters."""
    P = len(names)
    if law_starts.shape[1] != 5:
        raise FitError(f"starts must have 5 columns (log A, alpha, log B, beta, log E), got {law_starts.shape[1]}")
    if P == 5:
        return law_starts
    if model == "decoupled":
        extra = [np.zeros(P - 5)]  # every capacity starts at 1
    elif model == "kumar":
        extra = [np.log([gw, ga]) for gw in (1.0, 3.0) for ga in (1.0, 3.0)]
    else:  # unified: per family log L = 0 and a few (F, C) shapes
        nf = len(part.families)
        shapes = [(0.2, 1.0), (0.4, 1.4), (0.8, 2.0)]
        extra = []
        for combo in itertools.product(shapes, repeat=nf):
            v = []
            for F, C in combo:
                v += [0.0, math.log(F), math.log(C)]
            extra.append(np.array(v))
        if len(extra) > 9:
            extra = extra[:9]
    return np.array([np.concatenate([ls, e]) for ls in law_starts for e in extra])


def _converged(problem: _Problem, x: np.ndarray) -> bool:
    f, g = problem.fun()(x[None, :], np.zeros(1, dtype=int))
    if not np.isfinite(f[0]):
        return False
    # A perfect fit (noiseless data): residuals ~1e-5 delta; nothing left to converge.
    delta = min(getattr(problem.objective, "delta", 1.0), 1.0)
    if f[0] <= 1e-10 * len(problem.objective.y) * delta**2:
        return True
    # Scale-free: moving any coordinate by 1% of its size (at least 0.01) changes f by a
    # first-order amount below 1e-5 of f.
    rel = np.abs(g[0]) * np.maximum(np.abs(x), 1.0) * 1e-2
    return bool(np.all(rel <= 1e-5 * max(abs(f[0]), 1e-300)))


def _hold_unidentified(families, n_gmse, incidence, stage_family, base_law, names, notes,
                       user_fixed: Mapping[int, float]) -> dict[int, tuple[float, str]]:
    """Families the runs cannot identify are held at the base law (or L at 1 if only L is lost)."""
    held: dict[int, tuple[float, str]] = {}
    fitted: list[int] = []
    for j, fam in enumerate(families):
        idx = [names.index(f"{fam}.log{k}") for k in _FAMILY_KEYS]
        if all(i in user_fixed for i in idx):
            continue
        if n_gmse[fam] >= 3:
            fitted.append(j)
            continue
        if base_law is None or Family(fam) not in base_law.families:
            raise FitError(
                f"family '{fam}' has {n_gmse[fam]} distinct GMSE value(s) in these runs; fitting its "
                "L, F, C needs 3 or more (add runs, or give a base law that covers it)"
            )
        curve = base_law.families[Family(fam)]
        for k in _FAMILY_KEYS:
            held[names.index(f"{fam}.log{k}")] = (math.log(getattr(curve, k).value), f"held at law '{base_law.name}'")
        notes.append(f"family '{fam}': {n_gmse[fam]} distinct GMSE value(s), too few to fit; L, F, C held at law '{base_law.name}'")
    # L_f is confounded with A unless the runs differ in how many stages of f they carry
    # (e.g. weights-only vs weights + activations): check the design's rank.
    fitted = [j for j in fitted if names.index(f"{families[j]}.logL") not in user_fixed]
    counts = np.stack([incidence[stage_family == j].sum(axis=0) for j in fitted], axis=1) if fitted else None
    if counts is not None and 0 not in user_fixed:  # with A held, L is identified by the data
        design = np.ones((counts.shape[0], 1))
        for col, j in enumerate(fitted):
            trial = np.hstack([design, counts[:, col : col + 1]])
            if np.linalg.matrix_rank(trial) > np.linalg.matrix_rank(design):
                design = trial
            else:
                fam = families[j]
                held[names.index(f"{fam}.logL")] = (0.0, "held at 1: not identifiable from A with these runs")
                notes.append(f"family '{fam}': L is confounded with A (every run has the same number of "
                             f"{fam} stages); held at 1")
    return held


def _bootstrap(problem: _Problem, x_best: np.ndarray, W: np.ndarray, full_starts: np.ndarray,
               rng: np.random.Generator, per_replicate: int):
    K = W.shape[0]
    R = max(1, per_replicate)
    grid = full_starts[:, problem.free]
    x0 = np.empty((K * R, len(problem.free)))
    x0[0::R] = x_best
    for r in range(1, R):
        x0[r::R] = grid[rng.integers(0, len(grid), size=K)]
    Wr = np.repeat(W, R, axis=0)
    x, f, _, _ = _batched_lbfgs(problem.fun(Wr), x0)
    f = f.reshape(K, R)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    xb = x.reshape(K, R, -1)[np.arange(K), best]
    ok = np.isfinite(f[np.arange(K), best])
    return problem.full(xb[ok]), int(K - ok.sum())


def _constants(names, theta, boot_theta, fixed_all, held, user_fixed) -> dict[str, ConstantEstimate]:
    values = _public_values(names, theta)[0]
    boot = _public_values(names, boot_theta) if boot_theta is not None and len(boot_theta) else None
    out: dict[str, ConstantEstimate] = {}
    for j, n in enumerate(names):
        if n.startswith("phi:"):
            continue  # reported as capacities
        pub = _public_name(n)
        is_fixed = j in fixed_all
        source = "fixed" if j in user_fixed else (held[j][1] if j in held else "fit")
        if boot is not None and not is_fixed:
            lo, hi, sig = _percentiles(boot[:, j])
            out[pub] = ConstantEstimate(value=float(values[j]), sigma=float(sig), low=float(lo), high=float(hi),
                                        fixed=False, source=source)
        else:
            out[pub] = ConstantEstimate(value=float(values[j]), fixed=is_fixed, source=source)
    return out


def _loso(problem, x_full, runs, schemes, of_run, part, family_info, base_law, logrho_full, notes) -> list[LosoEntry]:
    """Refit without each scheme (batched), predict its runs from its stages' GMSE alone."""
    names = list(problem.objective.names)
    S = len(schemes)
    W = np.ones((S, len(runs)))
    mask = np.ones((S, len(problem.free)))
    x0 = np.tile(x_full, (S, 1))
    untestable: dict[int, str] = {}
    free_pos = {j: k for k, j in enumerate(problem.free)}
    for s in range(S):
        W[s, of_run == s] = 0.0
        keep = W[s] > 0
        for fj, fam in enumerate(part.families):
            idx = [names.index(f"{fam}.log{k}") for k in _FAMILY_KEYS]
            if not any(i in free_pos for i in idx):
                continue
            left = {b for u, b in enumerate(part.bits) if part.fam[u] == fj and np.any(part.incidence[u, keep] > 0)}
            if len(left) >= 3:
                continue
            if base_law is not None and Family(fam) in base_law.families:
                curve = base_law.families[Family(fam)]
                for i, k in zip(idx, _FAMILY_KEYS, strict=True):
                    if i in free_pos:
                        x0[s, free_pos[i]] = math.log(getattr(curve, k).value)
                        mask[s, free_pos[i]] = 0.0
            else:
                untestable[s] = f"without it, family '{fam}' has {len(left)} distinct GMSE value(s): not identifiable"
    x, f, _, _ = _batched_lbfgs(problem.fun(W, mask), x0)
    theta = problem.full(x)
    pred = problem.objective.predict(theta)
    lr = problem.objective.logrho(theta)
    out = []
    for s, name in enumerate(schemes):
        members = np.flatnonzero(of_run == s)
        first = int(members[0])
        if s in untestable or not np.isfinite(f[s]):
            out.append(LosoEntry(scheme=name, n_runs=len(members), rmse=None, rho_full=float(np.exp(logrho_full[first])),
                                 rho_loso=None, note=untestable.get(s, "refit failed")))
            continue
        err = pred[s, members] - problem.objective.y[members]
        out.append(LosoEntry(scheme=name, n_runs=len(members), rmse=float(np.sqrt(np.mean(err**2))),
                             rho_full=float(np.exp(logrho_full[first])), rho_loso=float(np.exp(lr[s, first]))))
    return out


def _delta_sensitivity(runs, capacities, delta, problem, x, part, logN, logD, y, notes, reference, of_run):
    """Refit the decoupled capacities with the other Huber regime (least squares <-> robust)."""
    other = 1.0 if delta < 0.1 else DEFAULT_HUBER_DELTA
    center = (problem.objective.cN != 0.0, problem.objective.cD != 0.0)
    alt = _Problem(_LossObjective(logN, logD, y, part, other, center=center), problem.fixed)
    xa, _, _, _ = _batched_lbfgs(alt.fun(), x[None, :])
    xa_best, _, _ = alt.polish(xa[0])
    lr = alt.objective.logrho(alt.full(xa_best))[0]
    out, shifts = [], []
    for j, cap in enumerate(capacities):
        first = int(np.flatnonzero(of_run == j)[0])
        rho_alt = float(np.exp(lr[first]))
        shifts.append((abs(rho_alt - cap.rho), cap.scheme))
        out.append(cap.model_copy(update={"rho_alt_delta": rho_alt}))
    worst, scheme = max(shifts)
    width = [c.rho_high - c.rho_low for c in capacities if c.rho_low is not None and c.rho_high is not None]
    msg = (f"capacities move with the Huber delta: refitted at delta {other:g}, '{scheme}' shifts by "
           f"{worst:.3f}")
    if width:
        msg += f" (median 95% bootstrap interval width {float(np.median(width)):.3f})"
    msg += "; capacity is weakly identified when alpha is small"
    notes.append(msg)
    return out


# --------------------------------------------------------------------------------------------
# Capacity curves
# --------------------------------------------------------------------------------------------


def _capacity_grid(nf: int, rng: np.random.Generator, limit: int = 4000) -> np.ndarray:
    per = [np.array([math.log(L), math.log(F), math.log(C)])
           for L in (0.8, 1.0, 1.2) for F in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2) for C in (0.25, 0.5, 1.0, 2.0, 4.0)]
    per = np.array(per)
    if nf == 1:
        return per
    combos = np.array([np.concatenate(c) for c in itertools.product(per, repeat=nf)]) if len(per) ** nf <= limit * 4 \
        else np.concatenate([per[rng.integers(0, len(per), size=limit)] for _ in range(nf)], axis=1)
    if len(combos) > limit:
        combos = combos[rng.choice(len(combos), size=limit, replace=False)]
    return combos


def fit_capacity(
    points: Sequence[CapacityPoint],
    *,
    huber_delta: float = DEFAULT_CAPACITY_DELTA,
    fixed: Mapping[str, float] | None = None,
    base_law=None,
    bootstrap: int = 0,
    seed: int = 0,
    targets: np.ndarray | None = None,
) -> CapacityFit:
    """Fit L, F, C per family to (stage GMSEs, rho) points: rho = prod_stages L_f tanh(F_f bits)^C_f.

    ``bootstrap`` resamples the points K times; ``targets`` (K, n_points) instead refits K
    given replicates of the rho values (e.g. from a decoupled fit's bootstrap), which carries
    the capacities' own uncertainty into L, F, C.
    """
    if not (huber_delta > 0 and math.isfinite(huber_delta)):
        raise FitError(f"capacity Huber delta {huber_delta} must be a positive number")
    points = list(points)
    for p in points:
        if not (math.isfinite(p.rho) and p.rho > 0):
            raise FitError(f"capacity point '{p.name}': rho = {p.rho} must be positive")
    rng = np.random.default_rng(seed)
    families = sorted({Family(f).value for p in points for f, _ in p.stages})
    if not families:
        raise FitError("capacity fit: no point has a lossy stage")
    stage_family, stage_bits, incidence = _stage_structure([p.stages for p in points], families)
    part = _StagePart(families, stage_family, stage_bits, incidence)
    names = list(part.names)
    notes: list[str] = []
    n_gmse = {fam: len({b for b, sf in zip(stage_bits, stage_family, strict=True) if sf == j})
              for j, fam in enumerate(families)}
    held: dict[int, tuple[float, str]] = {}
    for fam in families:
        if n_gmse[fam] >= 3:
            continue
        if base_law is None or Family(fam) not in base_law.families:
            raise FitError(f"family '{fam}' has {n_gmse[fam]} distinct GMSE value(s); fitting L, F, C needs 3 or more")
        curve = base_law.families[Family(fam)]
        for k in _FAMILY_KEYS:
            held[names.index(f"{fam}.log{k}")] = (math.log(getattr(curve, k).value), f"held at law '{base_law.name}'")
        notes.append(f"family '{fam}': too few distinct GMSE values; held at law '{base_law.name}'")
    user_fixed = {}
    for key, value in (fixed or {}).items():
        fam, _, k = key.rpartition(".")
        if f"{fam}.log{k}" not in names:
            raise FitError(f"fixed constant '{key}' is not a capacity constant here (known: {', '.join(_public_names(names))})")
        if not value > 0:
            raise FitError(f"fixed constant {key} = {value} must be positive")
        user_fixed[names.index(f"{fam}.log{k}")] = math.log(value)
    fixed_all = {**{j: v for j, (v, _) in held.items()}, **user_fixed}
    target = np.array([p.rho for p in points])
    weight = np.array([p.weight for p in points])
    objective = _CapacityObjective(part, target, huber_delta)
    problem = _Problem(objective, fixed_all)
    if len(points) < len(problem.free):
        raise FitError(f"a capacity fit with {len(problem.free)} free constants needs at least {len(problem.free)} points; got {len(points)}")
    grid = _capacity_grid(len(families), rng)
    x0 = np.unique(grid[:, problem.free], axis=0)
    Wg = np.broadcast_to(weight, (len(x0), len(weight)))
    x, f, _, _ = _batched_lbfgs(problem.fun(Wg), x0)
    best = x[int(np.argmin(f))]
    xp, _, _ = problem.polish(best, weight)
    theta = problem.full(xp)
    boot_theta = None
    if bootstrap > 0 or targets is not None:
        if targets is not None:
            T = np.asarray(targets, dtype=float)
            Wb = np.broadcast_to(weight, T.shape).copy()
        else:
            T = np.broadcast_to(target, (bootstrap, len(points))).copy()
            Wb = _bootstrap_weights(np.zeros(len(points), dtype=int), bootstrap, rng) * weight
        K = len(T)
        R = 3  # the full-data optimum and two random shapes per replicate
        starts = np.empty((K * R, len(problem.free)))
        starts[0::R] = xp
        for r in range(1, R):
            starts[r::R] = x0[rng.integers(0, len(x0), size=K)]
        xb, fb, _, _ = _batched_lbfgs(problem.fun(np.repeat(Wb, R, axis=0), target=np.repeat(T, R, axis=0)), starts)
        fb = fb.reshape(K, R)
        pick = np.argmin(np.where(np.isfinite(fb), fb, np.inf), axis=1)
        boot_theta = problem.full(xb.reshape(K, R, -1)[np.arange(K), pick])
    constants = _constants(names, theta[0], boot_theta, fixed_all, held, user_fixed)
    pred = objective.predict(theta)[0]
    fams = {fam: FamilyFit(L=constants[f"{fam}.L"].value, F=constants[f"{fam}.F"].value, C=constants[f"{fam}.C"].value,
                           held=all(constants[f"{fam}.{k}"].fixed for k in _FAMILY_KEYS), n_gmse=n_gmse[fam])
            for fam in families}
    return CapacityFit(
        families=fams, constants=constants, fit_error=float(np.sqrt(np.mean((pred - target) ** 2))),
        huber_delta=huber_delta, n_points=len(points), predicted=[float(v) for v in pred],
        bootstrap=len(boot_theta) if boot_theta is not None else 0, notes=notes,
    )


def _fit_capacity_model(runs, *, delta, bootstrap, seed, fixed, base_law, gmse, starts, capacity_delta,
                        data_files, bootstrap_starts) -> FitResult:
    """Decoupled capacities, then curves through them; the law re-predicts runs from the curves."""
    law_fixed = {k: v for k, v in (fixed or {}).items() if k in _LAW}
    cap_fixed = {k: v for k, v in (fixed or {}).items() if k not in law_fixed}
    dec, reps = _fit_loss_model(runs, model="decoupled", delta=delta, bootstrap=bootstrap, seed=seed,
                                fixed=law_fixed, base_law=None, gmse=None, starts=starts, loso=False,
                                sensitivity=False, bootstrap_starts=bootstrap_starts, data_files=data_files)
    gmse = gmse or GmseCache(seed=seed)
    by_scheme = {r.scheme: r for r in runs}
    points, stages = [], {}
    for cap in dec.capacities:
        st = tuple(run_stages(by_scheme[cap.scheme], gmse))
        stages[cap.scheme] = st
        if st:
            points.append(CapacityPoint(name=cap.scheme, stages=st, rho=cap.rho))
    cf = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed)
    constants = dict(dec.constants)
    if reps:  # bootstrap the curves through the decoupled replicates: one curve fit per replicate
        order = [p.name for p in points]
        T = np.stack([reps[name] for name in order], axis=1)
        cfb = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed, targets=T)
        cf = cf.model_copy(update={"constants": {k: cfb.constants[k].model_copy(update={"value": cf.constants[k].value})
                                                 for k in cf.constants}})
    constants.update(cf.constants)
    # Law predictions with the curves' capacities (the law constants from the decoupled fit).
    rho_of = dict(zip([p.name for p in points], cf.predicted, strict=True))
    law = dec.law_constants()
    resid, residuals = [], []
    for r in runs:
        rho = rho_of.get(r.scheme, 1.0)
        p = law["A"] * (r.N * rho) ** (-law["alpha"]) + law["B"] * r.D ** (-law["beta"]) + law["E"]
        e = math.log(p) - math.log(r.loss)
        resid.append(e)
        residuals.append(RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=p, residual=e, rho=rho))
    caps = [c.model_copy(update={"stage_gmse": [(f.value, g) for f, g in stages[c.scheme]]}) for c in dec.capacities]
    return dec.model_copy(update={
        "model": "capacity",
        "families": cf.families,
        "constants": constants,
        "capacities": caps,
        "residuals": residuals,
        "fit_error": float(np.sqrt(np.mean(np.square(resid)))),
        "capacity_fit_error": cf.fit_error,
        "notes": dec.notes + cf.notes + [f"capacity curves: Huber delta {capacity_delta:g} on rho; the fit "
                                         "error re-predicts every run from the curves"],
    })


# --------------------------------------------------------------------------------------------
# Factorization
# --------------------------------------------------------------------------------------------


def factorization_check(capacities: Sequence[SchemeCapacity]) -> FactorizationCheck:
    """rho(W:w A:a) against rho(w) * rho(a), and a rank-1 fit of the W x A grid.

    The weight factor is the weights-only scheme ``w``; the activation factor is the
    activations-only scheme (bf16 weights) when present, else the same format applied to weights
    only ("tied": the law's assumption that a format's capacity does not depend on the tensor).
    """
    rho = {(c.weights, c.activations): c.rho for c in capacities}
    dense = {(c.weights, c.activations) for c in capacities if c.reference}
    ref_w = next((w for w, a in dense), "bf16")

    def weights_only(w: str) -> float | None:
        if (w, None) in rho:
            return rho[(w, None)]
        return 1.0 if w == ref_w else None

    cells = []
    for c in capacities:
        if c.activations is None:
            continue
        rw = weights_only(c.weights)
        ra, tied = (rho.get((ref_w, c.activations)), False)
        if ra is None:
            ra, tied = weights_only(c.activations), True
        if rw is None or ra is None:
            continue
        cells.append(FactorizationCell(weights=c.weights, activations=c.activations, rho=c.rho, rho_weights=rw,
                                       rho_activations=ra, product=rw * ra, error=c.rho - rw * ra, tied=tied))
    errors = np.array([c.error for c in cells])
    # Rank-1 grid: rows = weight formats, columns = activation formats (None = not compressed).
    rows = sorted({w for w, _ in rho})
    cols = sorted({a or "" for _, a in rho})
    obs = [(rows.index(w), cols.index(a or ""), v) for (w, a), v in rho.items()]
    dof = len(obs) - (len(rows) + len(cols) - 1)
    rank1 = None
    note = ""
    if dof > 0:
        rank1 = _rank1_rms(obs, len(rows), len(cols))
    else:
        note = (f"the W x A grid has {len(obs)} cells for {len(rows) + len(cols) - 1} rank-1 parameters: "
                "a rank-1 test needs more cells (e.g. activation-only runs)")
    return FactorizationCheck(
        cells=cells, rms_error=float(np.sqrt(np.mean(errors**2))) if len(cells) else None,
        max_abs_error=float(np.max(np.abs(errors))) if len(cells) else None,
        rank1_rms=rank1, rank1_dof=dof, note=note,
    )


def _rank1_rms(obs, nr: int, nc: int, iters: int = 500) -> float:
    """Alternating least squares for rho[i, j] ~ u_i v_j over the observed cells."""
    i = np.array([o[0] for o in obs])
    j = np.array([o[1] for o in obs])
    v_obs = np.array([o[2] for o in obs])
    u = np.ones(nr)
    v = np.ones(nc)
    for _ in range(iters):
        u = np.bincount(i, weights=v_obs * v[j], minlength=nr) / np.maximum(np.bincount(i, weights=v[j] ** 2, minlength=nr), 1e-300)
        v = np.bincount(j, weights=v_obs * u[i], minlength=nc) / np.maximum(np.bincount(j, weights=u[i] ** 2, minlength=nc), 1e-300)
    return float(np.sqrt(np.mean((v_obs - u[i] * v[j]) ** 2)))


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def with_stage_gmse(capacities: Sequence[SchemeCapacity], gmse: Callable[[Format], float] | None = None,
                    ) -> list[SchemeCapacity]:
    """Capacities with the (family, GMSE) of each scheme's lossy stages filled in."""
    from gmse_cli.spec import resolve_format

    gmse = gmse or GmseCache()
    out = []
    for c in capacities:
        if c.stage_gmse is None:
            fmts = [resolve_format(c.weights)] + ([resolve_format(c.activations)] if c.activations else [])
            stages = [(fam.value, gmse(part)) for fmt in fmts for fam, part in fmt.stage_formats()]
            c = c.model_copy(update={"stage_gmse": stages})
        out.append(c)
    return out


def plot_fit(result: FitResult, path: str | Path, *, curves: Mapping[str, FamilyFit] | None = None,
             points: Sequence[SchemeCapacity] | None = None, curve_label: str = "") -> None:
    """Predicted vs observed loss; with capacity curves or points, also rho vs GMSE.

    ``curves`` default to the fit's families; ``points`` (default: the fit's capacities) are
    drawn with their bootstrap intervals as error bars -- pass a decoupled fit's capacities to
    show the free per-scheme capacities beside a unified fit's curves. A weights x activations
    scheme with the same format on both is drawn at sqrt(rho) (its per-tensor capacity under
    factorization); other composite schemes are left out of that panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = dict(result.families if curves is None else curves)
    source = result.capacities if points is None else points
    points = [c for c in source if c.stage_gmse and len(c.stage_gmse) in (1, 2) and not c.reference]
    has_cap = bool(curves) or bool(points)
    fig, axes = plt.subplots(1, 2 if has_cap else 1, figsize=(12 if has_cap else 6, 5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    obs = np.array([r.loss for r in result.residuals])
    pred = np.array([r.predicted for r in result.residuals])
    schemes = sorted({r.scheme for r in result.residuals})
    cmap = plt.get_cmap("tab20")
    for k, s in enumerate(schemes):
        sel = [i for i, r in enumerate(result.residuals) if r.scheme == s]
        ax.scatter(obs[sel], pred[sel], s=18, color=cmap(k % 20), label=s if len(schemes) <= 20 else None)
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(f"{result.model} fit: RMSE(log loss) = {result.fit_error:.2e}, {result.n_runs} runs")
    if len(schemes) <= 20:
        ax.legend(fontsize=6, loc="upper left")
    if has_cap:
        ax = axes[1]
        grid = np.logspace(-6, -0.05, 300)
        bits = -np.log(grid) / np.log(4.0)
        for k, (fam, c) in enumerate(sorted(curves.items())):
            ax.plot(grid, c.L * np.tanh(c.F * bits) ** c.C, color=cmap(2 * k),
                    label=f"{curve_label}{fam}: L={c.L:.2f} F={c.F:.2f} C={c.C:.2f}")
        for c in points:
            same = len(c.stage_gmse) == 2 and c.stage_gmse[0] == c.stage_gmse[1]
            if len(c.stage_gmse) == 2 and not same:
                continue
            g = c.stage_gmse[0][1]
            power = 0.5 if same else 1.0
            val = c.rho**power
            yerr = None
            if c.rho_low is not None and c.rho_high is not None:
                yerr = [[max(val - c.rho_low**power, 0.0)], [max(c.rho_high**power - val, 0.0)]]
            ax.errorbar([g], [val], yerr=yerr, fmt="s" if same else "o", ms=4, color="k" if not same else "tab:red",
                        capsize=2)
            ax.annotate(c.scheme, (g, val), fontsize=5, xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("GMSE")
        ax.set_ylabel("capacity rho (W+A same format: sqrt rho, squares)")
        ax.set_ylim(0, 1.1)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)

