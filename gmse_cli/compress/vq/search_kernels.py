"""Exact nearest-codeword search: the numba kernels behind :mod:`gmse_cli.compress.vq.search`.

:func:`assign` finds, for every slice of every row, the codeword nearest to the slice divided
by its group's scale, through the search structure of a
:class:`~gmse_cli.compress.vq.search.Searcher`. Ties (equal float64 squared distances summed
over the coordinates in order) go to the lowest codeword index, as the brute-force numpy twin
:func:`gmse_cli.compress.vq.search.nearest_reference` decides. Per kind: binary search (d = 1),
a cell grid (d = 2), float32 scores filtered by a proven rounding margin and re-measured in
float64 (flat, groups pruned by a triangle bound), or E8P's closed-form best sign pattern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gmse_cli.kernel_cache import numba

if TYPE_CHECKING:
    from gmse_cli.compress.vq.search import Searcher

__all__ = ["LINE", "GRID", "FLAT", "E8P", "assign"]

LINE, GRID, FLAT, E8P = 0, 1, 2, 3  # Searcher.kind: the search strategy
_CANDIDATES = 64  # refine buffer; more near-ties than this fall back to brute force


@numba.njit(cache=True)
def _k_dist(q, c, k):
    # Exact-order float64 squared distance (no fastmath: the twins must agree bit for bit).
    s = 0.0
    for i in range(q.shape[0]):
        t = np.float64(q[i]) - np.float64(c[k, i])
        s += t * t
    return s


@numba.njit(cache=True)
def _k_brute(q, c):
    best = np.inf
    arg = 0
    for k in range(c.shape[0]):
        dk = _k_dist(q, c, k)
        if dk < best:
            best = dk
            arg = k
    return arg


@numba.njit(cache=True)
def _k_margin(qn, cmax, d):
    # Twice a bound on the float32 rounding error of |c|^2 - 2 q.c (d multiply-adds onto a
    # rounded |c|^2), with slack: any codeword whose float32 score lies farther than this above
    # the best score cannot be nearest.
    r = np.sqrt(qn) + cmax
    return 8.0 * (d + 4) * 2.0**-24 * r * r + 1e-30


@numba.njit(cache=True, inline="always")
def _k_line(q, c):
    # Binary search for the first codeword >= q, then the nearer neighbour (lower on ties).
    v = q[0]
    lo = 0
    hi = c.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if c[mid, 0] < v:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return 0
    if lo == c.shape[0]:
        return lo - 1
    return lo - 1 if _k_dist(q, c, lo - 1) <= _k_dist(q, c, lo) else lo


@numba.njit(cache=True, inline="always")
def _k_grid(q, c, lo, inv_w, cells, cstart, cidx):
    fx = (np.float64(q[0]) - lo[0]) * inv_w
    fy = (np.float64(q[1]) - lo[1]) * inv_w
    if not (0.0 <= fx < cells and 0.0 <= fy < cells):
        return _k_brute(q, c)  # outside the grid (rare: beyond the codewords' range)
    cell = int(fx) * cells + int(fy)
    best = np.inf
    arg = 0
    for p in range(cstart[cell], cstart[cell + 1]):
        k = cidx[p]
        dk = _k_dist(q, c, k)
        if dk < best:
            best = dk
            arg = k
    return arg


_FAST = {"nnan", "ninf", "nsz", "contract"}  # no reassociation: per-element order is fixed


@numba.njit(cache=True)
def _k_min(s, m):
    """min(s[:m]) (m >= 1), through order-preserving int32 keys: LLVM vectorizes integer min
    reductions but not float ones. s[-1] is scratch (s holds at least m + 1 entries)."""
    v = s.view(np.int32)
    best = np.int32(0x7FFFFFFF)
    for k in range(m):
        i = v[k]
        key = i ^ ((i >> 31) & np.int32(0x7FFFFFFF))  # flips negatives: ints now order like floats
        best = key if key < best else best
    v[v.shape[0] - 1] = best ^ ((best >> 31) & np.int32(0x7FFFFFFF))
    return s[s.shape[0] - 1]


@numba.njit(cache=True)
def _k_below(s, m, thr):
    """(how many of s[:m] are <= thr, sum of their positions): vectorized integer sums."""
    count = 0
    total = 0
    for k in range(m):
        hit = s[k] <= thr
        count += hit
        total += k if hit else 0
    return count, total


@numba.njit(cache=True, fastmath=_FAST)
def _k_scores(q, ct, cn, start, stop, s):
    """s[k] = |c|^2 - 2 q.c in float32 for codewords start..stop-1 (vectorized over them)."""
    # 1-D row slices: unit stride is then known, so the loops use contiguous vector loads
    # (indexing ct[i, k] directly compiles to gathers).
    m = stop - start
    q0 = np.float32(-2.0) * q[0]
    row = ct[0, start:stop]
    norms = cn[start:stop]
    for k in range(m):
        s[k] = norms[k] + q0 * row[k]
    for i in range(1, q.shape[0]):
        qi = np.float32(-2.0) * q[i]
        row = ct[i, start:stop]
        for k in range(m):
            s[k] += qi * row[k]


@numba.njit(cache=True, inline="always")
def _k_flat(q, c, ct, cn, perm, gstart, gcent, grad, cmax, s, gd, cand):
    d = q.shape[0]
    groups = gstart.shape[0] - 1
    qn = 0.0
    for i in range(d):
        qn += np.float64(q[i]) * np.float64(q[i])
    margin = _k_margin(qn, cmax, d)
    if groups == 1:
        k_all = gstart[1]
        _k_scores(q, ct, cn, 0, k_all, s)
        thr = np.float32(_k_min(s, k_all) + margin)
        count, total = _k_below(s, k_all, thr)
        if count == 1:
            return perm[total]  # the only codeword within the margin: provably nearest
        ncand = 0
        for k in range(k_all):
            if s[k] <= thr:
                if ncand == cand.shape[0]:
                    return _k_brute(q, c)  # a pile of near-ties (e.g. a symmetric point)
                cand[ncand, 0] = perm[k]
                ncand += 1
        return _k_refine(q, c, cand, ncand)
    # Groups in order of centre distance; |q - c| >= |q - centre| - radius bounds a group.
    for g in range(groups):
        t = 0.0
        for i in range(d):
            u = np.float64(q[i]) - gcent[g, i]
            t += u * u
        gd[g] = np.sqrt(t)
    order = np.argsort(gd[:groups])
    best = np.inf
    ncand = 0
    for gi in range(groups):
        g = order[gi]
        gap = gd[g] - grad[g]
        if gap > 0.0 and gap * gap - qn > best + margin:  # scores are |q - c|^2 - |q|^2
            continue
        start = gstart[g]
        stop = gstart[g + 1]
        if stop == start:
            continue
        _k_scores(q, ct, cn, start, stop, s)
        m = np.float64(_k_min(s, stop - start))
        if m > best + margin:
            continue
        if m < best:
            best = m
            kept = 0  # drop the candidates the new best rules out
            for p in range(ncand):
                if cand[p, 1] <= best + margin:
                    cand[kept, 0] = cand[p, 0]
                    cand[kept, 1] = cand[p, 1]
                    kept += 1
            ncand = kept
        for k in range(stop - start):
            if s[k] <= best + margin:
                if ncand == cand.shape[0]:
                    return _k_brute(q, c)
                cand[ncand, 0] = perm[start + k]
                cand[ncand, 1] = s[k]
                ncand += 1
    kept = 0
    for p in range(ncand):
        if cand[p, 1] <= best + margin:
            cand[kept, 0] = cand[p, 0]
            kept += 1
    return _k_refine(q, c, cand, kept)


@numba.njit(cache=True)
def _k_refine(q, c, cand, ncand):
    """Among candidate indices cand[:ncand, 0], the exact nearest (lowest index on ties)."""
    arg = -1
    bestd = np.inf
    for p in range(ncand):
        k = np.int64(cand[p, 0])
        dk = _k_dist(q, c, k)
        if dk < bestd or (dk == bestd and k < arg):
            bestd = dk
            arg = k
    return arg


@numba.njit(cache=True, fastmath=_FAST)
def _k_e8_scores(y, at, an, apar, s):
    """Per absolute pattern a: the float32 score |a|^2 - 2 sum(sigma a y) of its best sign
    pattern sigma: sigma = sign(y), and if that gives an odd coordinate sum, the cheapest
    coordinate flipped (cost 4 min a|y|)."""
    nneg = 0
    for i in range(8):
        nneg += y[i] < 0
    # One pass over the patterns, the eight coordinates unrolled: each pattern's dot product
    # and minimum stay in registers and the loop vectorizes over patterns (3x faster than
    # eight passes accumulating through memory).
    w0, w1, w2, w3 = abs(y[0]), abs(y[1]), abs(y[2]), abs(y[3])
    w4, w5, w6, w7 = abs(y[4]), abs(y[5]), abs(y[6]), abs(y[7])
    r0, r1, r2, r3 = at[0, :], at[1, :], at[2, :], at[3, :]  # 1-D rows: contiguous vector loads
    r4, r5, r6, r7 = at[4, :], at[5, :], at[6, :], at[7, :]
    for k in range(at.shape[1]):
        t0, t1, t2, t3 = r0[k] * w0, r1[k] * w1, r2[k] * w2, r3[k] * w3
        t4, t5, t6, t7 = r4[k] * w4, r5[k] * w5, r6[k] * w6, r7[k] * w7
        dot = ((((((t0 + t1) + t2) + t3) + t4) + t5) + t6) + t7
        m = t0
        for t in (t1, t2, t3, t4, t5, t6, t7):
            m = t if t < m else m  # select form: vectorizes, min() does not
        odd = (apar[k] + nneg) & 1
        s[k] = an[k] - np.float32(2.0) * dot + np.float32(4.0) * np.float32(odd) * m


@numba.njit(cache=True)
def _k_e8_shift(q, shift, y):
    yn = 0.0
    for i in range(8):
        y[i] = np.float32(np.float64(q[i]) - shift)
        yn += np.float64(y[i]) * np.float64(y[i])
    return yn


@numba.njit(cache=True, inline="always")
def _k_e8p(q, c, at, an, apar, y, s, cand):
    # Codeword index = shift_bit << 15 | pattern << 7 | sign code (see e8p_codebook).
    # Squared distance to the best point of (shift, pattern) = |y|^2 + score, y = q -+ 1/4.
    kk = at.shape[1]
    yn0 = _k_e8_shift(q, -0.25, y[0])
    yn1 = _k_e8_shift(q, 0.25, y[1])
    _k_e8_scores(y[0], at, an, apar, s[0])
    _k_e8_scores(y[1], at, an, apar, s[1])
    best0 = yn0 + _k_min(s[0], kk)
    best1 = yn1 + _k_min(s[1], kk)
    best = min(best0, best1)
    # scores carry 8 products, 8 minima and the parity term: twice the generic float32 margin
    margin = 2.0 * _k_margin(max(yn0, yn1), np.sqrt(12.0), 8)
    thr0 = np.float32(best + margin - yn0)
    thr1 = np.float32(best + margin - yn1)
    n0, t0 = _k_below(s[0], kk, thr0) if best0 <= best + margin else (0, 0)
    n1, t1 = _k_below(s[1], kk, thr1) if best1 <= best + margin else (0, 0)
    if n0 + n1 == 1:
        # One (shift, pattern) survives: its best sign pattern is unique unless the runner-up
        # (two more flips, or the parity flip moved) is within the margin.
        shift_bit = 0 if n0 == 1 else 1
        k = t0 if n0 == 1 else t1
        m1 = np.inf
        m2 = np.inf
        j1 = 0
        nneg = 0
        for i in range(8):
            t = np.float64(at[i, k]) * abs(np.float64(y[shift_bit, i]))
            nneg += y[shift_bit, i] < 0
            if t < m1:
                m2 = m1
                m1 = t
                j1 = i
            elif t < m2:
                m2 = t
        odd = (apar[k] + nneg) & 1
        gap = 4.0 * (m2 - m1) if odd else 4.0 * (m1 + m2)
        if gap > margin:
            code = 0
            for i in range(1, 8):
                neg = y[shift_bit, i] < 0
                if odd and i == j1:
                    neg = not neg
                if neg:
                    code |= 1 << (i - 1)
            return (shift_bit << 15) | (k << 7) | code
    # Near-ties: measure every sign pattern of every surviving (shift, pattern) exactly.
    ncand = 0
    for shift_bit in range(2):
        thr = thr0 if shift_bit == 0 else thr1
        if (n0 if shift_bit == 0 else n1) == 0:
            continue
        for k in range(kk):
            if s[shift_bit, k] <= thr:
                if ncand == cand.shape[0]:
                    return _k_brute(q, c)
                cand[ncand, 0] = shift_bit
                cand[ncand, 1] = k
                ncand += 1
    arg = -1
    bestd = np.inf
    for p in range(ncand):
        base = (cand[p, 0] << 15) | (cand[p, 1] << 7)
        for code in range(128):
            idx = base | code
            dk = _k_dist(q, c, idx)
            if dk < bestd or (dk == bestd and idx < arg):
                bestd = dk
                arg = idx
    return arg


@numba.njit(cache=True)
def _k_scratch(d, k, groups):
    # one extra float32 at the end of each score buffer: _k_min's scratch cell
    return (
        np.empty(d, np.float32),
        np.empty(k + 1, np.float32),
        np.empty(max(groups, 1), np.float64),
        np.empty((_CANDIDATES, 2), np.float64),
        np.empty((2, 8), np.float32),
        np.empty((2, 257), np.float32),
        np.empty((_CANDIDATES, 2), np.int64),
    )


@numba.njit(cache=True, inline="always")
def _k_find(kind, q, c, ct, cn, perm, gstart, gcent, grad, cmax, lo, inv_w, cells, cstart, cidx,
            at, an, apar, s, gd, cand, y, s2, icand):
    if kind == LINE:
        return _k_line(q, c)
    if kind == GRID:
        return _k_grid(q, c, lo, inv_w, cells, cstart, cidx)
    if kind == FLAT:
        return _k_flat(q, c, ct, cn, perm, gstart, gcent, grad, cmax, s, gd, cand)
    return _k_e8p(q, c, at, an, apar, y, s2, icand)


_TASK_SLICES = 256  # slices per parallel task (one scratch allocation each)


@numba.njit(parallel=True, cache=True)
def _k_assign(x, scales, group, out, kind, c, ct, cn, perm, gstart, gcent, grad, cmax, lo, inv_w,
              cells, cstart, cidx, at, an, apar):
    """out[r, t] = nearest codeword to slice t of row r divided by its group's scale (-1 where
    the scale is 0). The one search kernel: nearest() is the case of one slice per row."""
    rows, n = x.shape
    d = c.shape[1]
    slices = n // d
    groups = gstart.shape[0] - 1
    per_task = max(1, _TASK_SLICES // slices)  # rows per task
    tasks = (rows + per_task - 1) // per_task
    for task in numba.prange(tasks):
        q, s, gd, cand, y, s2, icand = _k_scratch(d, c.shape[0], groups)
        for r in range(task * per_task, min(rows, (task + 1) * per_task)):
            for t in range(slices):
                j0 = t * d
                sc = scales[r, j0 // group]
                if sc == 0.0:
                    out[r, t] = -1
                    continue
                for i in range(d):
                    q[i] = x[r, j0 + i] / sc
                out[r, t] = _k_find(kind, q, c, ct, cn, perm, gstart, gcent, grad, cmax, lo, inv_w,
                                    cells, cstart, cidx, at, an, apar, s, gd, cand, y, s2,
                                    icand)


def _search_args(sr: Searcher) -> tuple:
    return (sr.kind, sr.c, sr.ct, sr.cn, sr.perm, sr.gstart, sr.gcent, sr.grad, sr.cmax, sr.lo,
            sr.inv_w, sr.cells, sr.cstart, sr.cidx, sr.at, sr.an, sr.apar)


def assign(sr: Searcher, x: np.ndarray, scales: np.ndarray, group: int, out: np.ndarray) -> None:
    """out[r, t] = index of the codeword of ``sr`` nearest to slice t of row r of float32 ``x``
    divided by ``scales[r, t * dim // group]`` (-1 where that scale is 0); numba, parallel."""
    _k_assign(x, scales, group, out, *_search_args(sr))
