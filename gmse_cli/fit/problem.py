"""A fitting problem: an objective with some parameters held, solved from many starts.

:class:`Problem` turns an objective over all parameters into a batched function of the free
ones (with per-row data weights, gradient masks and extra per-row data such as capacity
targets); :func:`multistart` solves it from a grid of starts (:func:`epoch_grid`,
:func:`coarse_law_grid` times the capacity parameters' starts from :func:`expand_starts`) and
:func:`is_converged` checks the result scale-free.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.objective import huber
from gmse_cli.fit.optimize import batched_lbfgs

MAX_CELLS = 1 << 21
"""Rows x data points one objective call works on (16 MB per float64 temporary)."""

__all__ = ["Problem", "epoch_grid", "coarse_law_grid", "expand_starts", "multistart", "multistart_many", "is_converged"]


class Problem:
    """An objective with some parameters held fixed; works on the free coordinates."""

    def __init__(self, objective, fixed: Mapping[int, float]):
        self.objective = objective
        self.P = len(objective.names)
        self.fixed = dict(fixed)
        self.free = np.array([j for j in range(self.P) if j not in self.fixed], dtype=int)
        self.points = max(1, len(getattr(objective, "y", ())))  # data points per row of a batch

    def full(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        theta = np.empty((x.shape[0], self.P))
        for j, v in self.fixed.items():
            theta[:, j] = v
        theta[:, self.free] = x
        return theta

    def fun(self, weights=None, mask=None, **extra):
        def evaluate_chunk(x, rows):
            w = None if weights is None else weights[rows]
            kw = {k: v[rows] for k, v in extra.items()}
            f, g = self.objective.value_grad(self.full(x), w, **kw) if (w is not None or kw) else \
                self.objective.value_grad(self.full(x))
            g = g[:, self.free]
            if mask is not None:
                g = g * mask[rows]
            return f, g

        def evaluate(x, rows):
            # The objective's temporaries are (rows, runs): thousands of starts times tens of
            # thousands of runs would take gigabytes at once, so rows go through in chunks.
            step = max(1, MAX_CELLS // self.points)
            if len(rows) <= step:
                return evaluate_chunk(x, rows)
            parts = [evaluate_chunk(x[i : i + step], rows[i : i + step]) for i in range(0, len(rows), step)]
            return np.concatenate([f for f, _ in parts]), np.concatenate([g for _, g in parts])

        return evaluate

    def polish(self, x0: np.ndarray, weights=None, *, hold: np.ndarray | None = None, maxiter: int = 15000,
               **extra: np.ndarray):
        """Scipy's L-BFGS-B on one problem: the reference optimizer, tight tolerances.

        ``hold`` (a boolean per free coordinate) keeps those coordinates at their ``x0`` values;
        ``extra`` are the problem's per-row data for this one row (see :meth:`fun`).
        """
        from scipy.optimize import minimize

        fun = self.fun(None if weights is None else np.asarray(weights)[None, :],
                       **{k: np.asarray(v)[None] for k, v in extra.items()})
        rows = np.zeros(1, dtype=int)
        x0 = np.asarray(x0, dtype=float)
        moving = np.ones(len(x0), dtype=bool) if hold is None else ~np.asarray(hold, dtype=bool)
        f0 = fun(x0[None, :], rows)[0][0]
        scale = 1.0 / max(abs(f0), 1e-300)  # scipy's tolerances are absolute; make f ~ 1

        def full(z):
            x = x0.copy()
            x[moving] = z
            return x

        def fg(z):
            f, g = fun(full(z)[None, :], rows)
            return float(f[0]) * scale, g[0][moving] * scale

        res = minimize(fg, x0[moving], jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20})
        x = full(res.x) if res.fun <= 1.0 else x0  # never return something worse than the start
        return x, fun(x[None, :], rows)[0][0], bool(res.success or res.nit > 0)


def epoch_grid() -> np.ndarray:
    """Besiroglu et al.'s grid of starts in (log A, alpha, log B, beta, log E): 4,500 points."""
    alpha = np.arange(0.0, 2.5, 0.5)
    beta = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 1.5, 0.5)
    a = np.arange(0.0, 30.0, 5.0)
    b = np.arange(0.0, 30.0, 5.0)
    return np.array([(ai, al, bi, be, ei) for al, be, ei, ai, bi in itertools.product(alpha, beta, e, a, b)])


def coarse_law_grid() -> np.ndarray:
    """162 law starts for the models that add capacity parameters (their grid multiplies).

    On the QuEST runs this finds the same optimum as a 1,600-point grid for the decoupled,
    unified and kumar models, at a tenth of the time.
    """
    vals = itertools.product([0.1, 0.3, 0.9], [0.1, 0.3, 0.9], [-0.5, 0.5], [0.0, 8.0, 16.0], [0.0, 8.0, 16.0])
    return np.array([(a, al, b, be, e) for al, be, e, a, b in vals])


def expand_starts(model: str, law_starts: np.ndarray, part, names: Sequence[str]) -> np.ndarray:
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


class RowsOf:
    """``table[index]`` indexed lazily: ``RowsOf(t, i)[rows]`` is ``t[i[rows]]``."""

    def __init__(self, table: np.ndarray, index: np.ndarray):
        self.table, self.index = table, index

    def __getitem__(self, rows):
        return self.table[self.index[rows]]


def multistart(problem: Problem, starts: np.ndarray, *, weights=None, grid_iter: int = 300,
               finalists: int = 4, final_iter: int = 3000):
    """L-BFGS from every start, then the best few to convergence, then polish the best.

    The grid stage runs every start (batched) for at most ``grid_iter`` iterations: enough to
    settle each start into its basin (a Chinchilla start needs about 100-200), not to finish a
    badly conditioned one. The ``finalists`` best distinct rows then continue for up to
    ``final_iter`` iterations, and scipy's L-BFGS-B polishes the winner.
    """
    W = None if weights is None else np.asarray(weights, dtype=float)[None, :]
    x, f, ok, n_starts = multistart_many(problem, starts, W, grid_iter=grid_iter, finalists=finalists,
                                         final_iter=final_iter)
    if not ok[0]:
        raise FitError("the fit did not converge: no start reached a finite objective")
    return x[0], f[0], n_starts, True


def multistart_many(problem: Problem, starts: np.ndarray, weights: np.ndarray | None, *,
                    hold: np.ndarray | None = None, values: np.ndarray | None = None,
                    extra: Mapping[str, np.ndarray] | None = None, grid_iter: int = 300, finalists: int = 4,
                    final_iter: int = 3000, progress=None):
    """:func:`multistart` for R problems at once: the same starts, each problem its own data.

    ``weights`` (R, n) are each problem's data weights (None: one problem, every run);
    ``hold`` (R, F) marks free coordinates a problem keeps at ``values`` (R, F) instead of its
    start (a family the problem's runs cannot identify); ``extra`` holds per-problem data
    (R, ...) for the objective. Every problem runs the whole procedure of :func:`multistart`
    from every start: the grid stage of all problems is one batched L-BFGS run (rows of
    different problems never merge), then each problem's best distinct rows, then scipy's
    polish of each winner. ``progress`` (a :class:`~gmse_cli.progress.Task`, optional) counts
    polished problems. Returns x (R, F), f (R,), whether each problem reached a finite
    objective (R,), and the number of distinct starts per problem.
    """
    R = 1 if weights is None else weights.shape[0]
    x0 = np.unique(starts[:, problem.free], axis=0)
    S, F = x0.shape
    X0 = np.tile(x0, (R, 1))
    mask = None
    if hold is not None:
        hold = np.asarray(hold, dtype=bool)
        X0 = np.where(np.repeat(hold, S, axis=0), np.repeat(values, S, axis=0), X0)
        mask = np.repeat(~hold, S, axis=0).astype(float)
    owner = np.repeat(np.arange(R), S)
    extra = dict(extra or {})

    def rows_fun(select: np.ndarray):
        # each problem's weights are looked up per call, not copied to every start's row
        w = None if weights is None else RowsOf(weights, owner[select])
        m = None if mask is None else mask[select]
        return problem.fun(w, m, **{k: v[owner[select]] for k, v in extra.items()})

    def tick(stage):
        if progress is None:
            return None
        return lambda it, active: progress.update(detail=f"{stage}: iteration {it}, {active} rows running")

    everything = np.arange(R * S)
    x, f, _, _ = batched_lbfgs(rows_fun(everything), X0, max_iter=grid_iter, groups=owner if R > 1 else None,
                               on_iteration=tick(f"{R} x {S} starts"))
    picks = []
    for r in range(R):
        rows = np.arange(r * S, (r + 1) * S)
        finite = rows[np.isfinite(f[rows])]
        order = finite[np.argsort(f[finite])]
        key = np.round(x[order] / (1e-3 * np.maximum(np.abs(x[order]), 1.0)))
        _, first = np.unique(key, axis=0, return_index=True)
        picks.append(order[np.sort(first)[:finalists]])
    pick = np.concatenate(picks)
    owner_pick = owner[pick]
    xf, ff, _, _ = batched_lbfgs(rows_fun(pick), x[pick], max_iter=final_iter,
                                 groups=owner_pick if R > 1 else None, on_iteration=tick("finalists"))
    xs = np.full((R, F), np.nan)
    fs = np.full(R, np.inf)
    ok = np.zeros(R, dtype=bool)
    for r in range(R):
        mine = np.flatnonzero(owner_pick == r)
        if mine.size == 0 or not np.any(np.isfinite(ff[mine])):
            continue
        best = mine[int(np.argmin(ff[mine]))]
        xp, fp, _ = problem.polish(xf[best], None if weights is None else weights[r],
                                   hold=None if hold is None else hold[r],
                                   **{k: v[r] for k, v in extra.items()})
        if not fp <= ff[best]:
            xp, fp = xf[best], ff[best]
        xs[r], fs[r], ok[r] = xp, fp, np.isfinite(fp)
        if progress is not None:
            progress.advance()
    return xs, fs, ok, S


PERFECT_RESIDUAL = 1e-6
"""A log-loss residual below which a fit is as exact as any measured loss (3 to 3e-6)."""


def is_converged(problem: Problem, x: np.ndarray, weights: np.ndarray | None = None) -> bool:
    f, g = problem.fun(None if weights is None else np.asarray(weights, dtype=float)[None, :])(
        x[None, :], np.zeros(1, dtype=int))
    if not np.isfinite(f[0]):
        return False
    # A perfect fit (noiseless data): residuals ~1e-5 delta, or an RMS residual within
    # PERFECT_RESIDUAL (noiseless runs at rounded GMSEs); nothing left to converge: there the
    # optimizer's last digits, not the data, set the gradient relative to f.
    delta = min(getattr(problem.objective, "delta", 1.0), 1.0)
    n = len(problem.objective.y) if weights is None else float(np.sum(weights))
    floor = float(huber(np.array(PERFECT_RESIDUAL), getattr(problem.objective, "delta", 1.0)))
    if f[0] <= max(1e-10 * n * delta**2, n * floor):
        return True
    # Scale-free: moving any coordinate by 1% of its size (at least 0.01) changes f by a
    # first-order amount below 1e-5 of f.
    rel = np.abs(g[0]) * np.maximum(np.abs(x), 1.0) * 1e-2
    return bool(np.all(rel <= 1e-5 * max(abs(f[0]), 1e-300)))
