"""Resampling: bootstrap weights, replicate refits and their percentile summaries.

A replicate is a row of data weights (resampling counts) or of targets; every replicate is one
row of a batched L-BFGS run, warm-started at the full-data optimum beside a few random grid
starts. Leave-one-out refits, which weight a group of runs to zero, live beside this in
:mod:`gmse_cli.fit.heldout`.
"""

from __future__ import annotations

import numpy as np

from gmse_cli.fit.optimize import batched_lbfgs
from gmse_cli.fit.params import public_name, public_values
from gmse_cli.fit.problem import Problem
from gmse_cli.fit.results import ConstantEstimate

__all__ = ["percentiles", "bootstrap_weights", "refit_replicates", "constant_estimates", "bootstrap_columns"]

_Z_LOW, _Z_HIGH = 2.5, 97.5  # percentile interval (95%)


def percentiles(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2.5%, 97.5%, 1-sigma) over axis 0; the sigma is half the 15.9-84.1% range."""
    lo, q16, q84, hi = np.percentile(samples, [_Z_LOW, 15.865525, 84.134475, _Z_HIGH], axis=0)
    return lo, hi, (q84 - q16) / 2.0


def bootstrap_weights(groups: np.ndarray, K: int, rng: np.random.Generator,
                      order: np.ndarray | None = None) -> np.ndarray:
    """(K, n) resampling counts, resampling runs within each group (scheme) separately.

    Stratifying keeps every scheme in every replicate, so a free capacity never loses its data.
    ``order`` (a permutation of the runs, default as given) is the order the draws see: groups
    in the order of their first run in it, each group's runs in it. Given by what the runs are
    (:func:`~gmse_cli.fit.design.canonical_order`), the same seed draws the same replicates
    however the runs file is ordered.
    """
    n = len(groups)
    order = np.arange(n) if order is None else np.asarray(order, dtype=int)
    ranked = np.asarray(groups)[order]
    _, first = np.unique(ranked, return_index=True)
    W = np.zeros((K, n))
    for gval in ranked[np.sort(first)]:
        idx = order[ranked == gval]
        draws = rng.integers(0, len(idx), size=(K, len(idx)))
        rows = np.repeat(np.arange(K), len(idx))
        np.add.at(W, (rows, idx[draws].ravel()), 1.0)
    return W


def refit_replicates(problem: Problem, x_best: np.ndarray, grid: np.ndarray, W: np.ndarray,
                     rng: np.random.Generator, *, per_replicate: int, **data: np.ndarray):
    """Refit each replicate (a row of ``W`` and of each ``data`` array) from several starts.

    Starts per replicate: ``x_best`` (free coordinates) and ``per_replicate - 1`` rows of
    ``grid`` drawn at random; the best end point wins. Returns the full parameters (K, P) and
    whether each replicate's objective is finite (K,).
    """
    K = W.shape[0]
    R = max(1, per_replicate)
    x0 = np.empty((K * R, len(problem.free)))
    x0[0::R] = x_best
    for r in range(1, R):
        x0[r::R] = grid[rng.integers(0, len(grid), size=K)]
    fun = problem.fun(np.repeat(W, R, axis=0), **{k: np.repeat(v, R, axis=0) for k, v in data.items()})
    x, f, _, _ = batched_lbfgs(fun, x0, groups=np.repeat(np.arange(K), R))  # replicates never merge
    f = f.reshape(K, R)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    xb = x.reshape(K, R, -1)[np.arange(K), best]
    return problem.full(xb), np.isfinite(f[np.arange(K), best])


def constant_estimates(names, theta, boot_theta, fixed_all, held, user_fixed) -> dict[str, ConstantEstimate]:
    """Each constant by public name: its value and, from replicates ``boot_theta``, its interval.

    ``fixed_all``, ``held`` and ``user_fixed`` map internal indices of held constants (all of
    them; held for identifiability, with where the value came from; held by the user).
    """
    values = public_values(names, theta)[0]
    boot = public_values(names, boot_theta) if boot_theta is not None and len(boot_theta) else None
    out: dict[str, ConstantEstimate] = {}
    for j, n in enumerate(names):
        if n.startswith("phi:"):
            continue  # reported as capacities
        pub = public_name(n)
        is_fixed = j in fixed_all
        source = "fixed" if j in user_fixed else (held[j][1] if j in held else "fit")
        if boot is not None and not is_fixed:
            lo, hi, sig = percentiles(boot[:, j])
            # A skewed bootstrap can put its percentile interval beside the estimate; widen it to
            # contain the value, as every interval uscl reports does (and a law file requires).
            value = float(values[j])
            out[pub] = ConstantEstimate(value=value, sigma=float(sig), low=min(float(lo), value), high=max(float(hi), value),
                                        fixed=False, source=source)
        else:
            out[pub] = ConstantEstimate(value=float(values[j]), fixed=is_fixed, source=source)
    return out


def bootstrap_columns(names, boot_theta, fixed_all) -> dict[str, tuple[float, ...]] | None:
    """The replicates ``boot_theta`` as joint draws: one column per constant the fit estimated
    (held ones have none), by public name; ``None`` without at least two replicates."""
    if boot_theta is None or len(boot_theta) < 2:
        return None
    boot = public_values(names, boot_theta)
    return {
        public_name(n): tuple(float(v) for v in boot[:, j])
        for j, n in enumerate(names)
        if not n.startswith("phi:") and j not in fixed_all
    } or None
