"""Batched L-BFGS: many independent minimizations, one per row of a parameter matrix.

Every start of a grid, every bootstrap replicate and every held-out refit is one row; one
objective call evaluates all active rows at once, so the per-row cost is a few vector
operations instead of a Python-level optimizer loop. The two-loop recursion runs in a numba
kernel (:func:`_two_loop_numba`) with a plain numpy twin (:func:`_two_loop`) the tests compare
it with.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batched_lbfgs"]


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
        from gmse_cli.kernel_cache import numba
        from gmse_cli.progress import watch_compiles

        watch_compiles()  # a first fit on a machine compiles it (2 s of CPU): say so, as the GMSE kernels do

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


def batched_lbfgs(fun, x0: np.ndarray, *, max_iter: int = 1000, history: int = 10,
                  ftol: float = 1e-10, gtol: float = 1e-10, max_step: float = 5.0,
                  max_backtracks: int = 40, merge_every: int = 10, merge_tol: float = 1e-4,
                  groups: np.ndarray | None = None, on_iteration=None):
    """Minimize independent problems, one per row of ``x0``, with L-BFGS and Armijo backtracking.

    ``fun(x, rows)`` returns ``(f, g)`` for the rows ``rows`` of the batch (``x`` holds those rows
    only), so each problem may carry its own data (bootstrap weights). A row stops when its
    objective decreases by less than ``ftol * max(|f|, 1e-300)`` in an iteration, when its largest
    gradient entry is below ``gtol * max(|f|, 1e-300)`` (both scale-free: Huber objectives on
    log-loss are tiny numbers), when no step along its direction decreases it, or at
    ``max_iter``. Every ``merge_every`` iterations, rows that have reached the same point (all
    coordinates within ``merge_tol``, relative) are merged: the copies stop, since they sit in
    the same basin and would end at the same minimum (most of a grid's starts do). Rows carrying
    different data (held-out refits) must never merge: ``groups`` (one label per row) limits
    merging to rows of the same label. ``on_iteration(iteration, active_rows)`` is called once per
    iteration (progress). Returns ``(x, f, iterations, converged)``.
    """
    x = np.array(x0, dtype=float)
    S, P = x.shape
    m = history
    f, g = fun(x, np.arange(S))
    f = np.where(np.isfinite(f), f, np.inf)
    if P == 0:  # every constant held: nothing to move, each row is at its own minimum
        return x, f, np.zeros(S, dtype=int), np.isfinite(f)
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
        if on_iteration is not None:
            on_iteration(it, idx.size)
        if merge_every and it and it % merge_every == 0 and idx.size > 1:
            key = np.round(x[idx] / (merge_tol * np.maximum(np.abs(x[idx]), 1.0)))
            if groups is not None:
                key = np.column_stack([groups[idx], key])
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
