"""Streamed Lloyd for large codebooks (above 1024 codewords): fresh samples every iteration,
assignment by a walk on the graph of neighbouring codewords (:func:`lloyd_streamed`).

Each numba kernel here has a plain numpy twin (``*_reference``) that the tests compare it with.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gmse_cli.compress.vq.lloyd import cell_sums
from gmse_cli.compress.vq.search import build_searcher, nearest_with, sq_dist_reference
from gmse_cli.kernel_cache import numba

__all__ = ["StreamedPlan", "streamed_plan", "lloyd_streamed", "knn_small"]


@numba.njit(parallel=True, cache=True)
def _k_walk_assign(x, order, c, neighbours, labels):
    """Greedy descent on the neighbour graph: each sample moves to the nearest codeword in its
    current codeword's list (itself first) until none is nearer. Samples go in ``order`` (by
    starting codeword, so neighbouring codewords stay in cache)."""
    n, d = x.shape
    tasks = (n + 1023) // 1024
    for t in numba.prange(tasks):
        for p in range(t * 1024, min(n, (t + 1) * 1024)):
            r = order[p]
            cur = labels[r]
            cur_d = np.inf
            for _ in range(64):  # a walk is short; the cap only bounds pathological cases
                arg = cur
                best = cur_d
                for j in range(neighbours.shape[1]):
                    k = neighbours[cur, j]
                    dk = 0.0
                    for i in range(d):
                        u = np.float64(x[r, i]) - np.float64(c[k, i])
                        dk += u * u
                    if dk < best:
                        best = dk
                        arg = k
                if arg == cur:
                    break
                cur = arg
                cur_d = best
            labels[r] = cur


def _walk_assign_reference(x: np.ndarray, c: np.ndarray, neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Plain numpy twin of :func:`_k_walk_assign` (all samples step together; returns labels)."""
    labels = labels.copy()
    cur_d = np.full(len(x), np.inf)
    active = np.ones(len(x), dtype=bool)
    for _ in range(64):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        cand = neighbours[labels[rows]]  # (n, L)
        d = np.zeros(cand.shape)
        for i in range(x.shape[1]):
            d += np.square(x[rows, i, None].astype(np.float64) - c[cand, i].astype(np.float64))
        j = np.argmin(d, axis=1)  # first of equal distances, as the kernel's strict '<'
        best = d[np.arange(len(rows)), j]
        moved = best < cur_d[rows]
        labels[rows[moved]] = cand[moved, j[moved]]
        cur_d[rows[moved]] = best[moved]
        active[rows] = moved
    return labels


def knn_small(c: np.ndarray, count: int) -> np.ndarray:
    """(K, count) exact nearest codewords of each codeword (itself first), brute force."""
    d = sq_dist_reference(c, c)
    np.fill_diagonal(d, -1.0)
    return np.argsort(d, axis=1, kind="stable")[:, :count]


def _product_neighbours(left: np.ndarray, right: np.ndarray, count: int) -> np.ndarray:
    """Neighbour lists of the product codebook (index i * len(right) + j) from its factors'."""
    r = math.ceil(math.sqrt(count))
    na = knn_small(left, min(r, len(left)))
    nb = knn_small(right, min(r, len(right)))
    cand = (na[:, None, :, None] * len(right) + nb[None, :, None, :]).reshape(len(left) * len(right), -1)
    c = np.concatenate([np.repeat(left, len(right), axis=0), np.tile(right, (len(left), 1))], axis=1)
    return _closest_of(c, cand, count)


def _closest_of(c: np.ndarray, cand: np.ndarray, count: int) -> np.ndarray:
    d = np.zeros(cand.shape)
    for i in range(c.shape[1]):
        d += np.square(c[cand, i].astype(np.float64) - c[:, None, i].astype(np.float64))
    d[cand == np.arange(len(c))[:, None]] = -1.0  # itself first
    return np.take_along_axis(cand, np.argsort(d, axis=1, kind="stable")[:, :count], 1)


@numba.njit(parallel=True, cache=True)
def _k_refine_neighbours(c, nb, out):
    """One neighbour-of-neighbour step: out[i] = the nearest of the union of nb[j], j in nb[i].

    Candidates in order of first appearance; ties in distance keep that order (stable sort).
    """
    k, count = nb.shape
    d = c.shape[1]
    tasks = (k + 255) // 256
    for t in numba.prange(tasks):
        stamp = np.full(k, -1, dtype=np.int64)
        cand = np.empty(count * count, dtype=np.int64)
        dist = np.empty(count * count, dtype=np.float64)
        for i in range(t * 256, min(k, (t + 1) * 256)):
            m = 0
            for p in range(count):
                j = nb[i, p]
                for p2 in range(count):
                    u = nb[j, p2]
                    if stamp[u] == i:
                        continue
                    stamp[u] = i
                    cand[m] = u
                    if u == i:
                        dist[m] = -1.0
                    else:
                        acc = 0.0
                        for a in range(d):
                            v = np.float64(c[i, a]) - np.float64(c[u, a])
                            acc += v * v
                        dist[m] = acc
                    m += 1
            order = np.argsort(dist[:m], kind="mergesort")
            for p in range(count):
                out[i, p] = cand[order[p]]


def _refine_neighbours_reference(c: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Plain numpy twin of :func:`_k_refine_neighbours`."""
    out = np.empty_like(nb)
    for i in range(len(nb)):
        flat = nb[nb[i]].ravel()
        _, first = np.unique(flat, return_index=True)
        cand = flat[np.sort(first)]
        d = sq_dist_reference(c[cand], c[i : i + 1])[:, 0]
        d[cand == i] = -1.0
        out[i] = cand[np.argsort(d, kind="stable")[: nb.shape[1]]]
    return out


class StreamedPlan(NamedTuple):
    """How :func:`lloyd_streamed` runs (default: :func:`streamed_plan`)."""

    batch: int  # fresh vectors per iteration
    iterations: int
    forget: float  # weight of the previous sums at each iteration
    neighbours: int  # list length of the neighbour graph
    refresh: int  # iterations between neighbour-list refreshes


def streamed_plan(dim: int) -> StreamedPlan:
    """The default plan for codewords of ``dim`` coordinates."""
    # 2^23 floats per batch; forgetting 0.9 keeps about 10 batches' worth (~8e7 floats) in the
    # sums, i.e. ~160 samples per codeword for 2^16 codewords in 8-D, fresh ones replacing old.
    return StreamedPlan(batch=2**23 // dim, iterations=48, forget=0.9, neighbours=32, refresh=8)


def lloyd_streamed(
    left: np.ndarray, right: np.ndarray, *, seed: int, plan: StreamedPlan
) -> tuple[np.ndarray, int, int, float]:
    """Lloyd for large codebooks: fresh samples every iteration, local assignment.

    Starts from the product of two smaller codebooks (``left`` x ``right``). Each iteration
    draws a fresh batch (antithetic pairs), starts each sample at the product codeword of its
    nearest parts (exact, cheap) and walks the neighbour graph (:func:`_k_walk_assign`) to a
    codeword nearer than all of its neighbours; codewords move to the means of their samples
    over the recent batches (sums decayed by ``plan.forget``). Fresh samples keep the codebook
    from overfitting a fixed sample, which costs nothing extra per iteration.

    Returns codewords, iterations, samples drawn, and the MSE of the last batch.

    Measured (default plan, 2^16 codewords in 8-D, 2 bits per coordinate): 143 s wall on a
    busy 2-core machine, MSE 0.0916 on fresh vectors, against 0.0970 for its product start
    (the 256-codeword 4-D codebook) and 0.0911 for E8P. The same Lloyd on a fixed sample of
    2^21 vectors reached 0.084 on that sample but only 0.092 on fresh vectors: with ~32
    samples per codeword, a fixed sample overfits.
    """
    d1 = left.shape[1]
    kr = len(right)
    c = np.concatenate([np.repeat(left, kr, axis=0), np.tile(right, (len(left), 1))], axis=1).astype(np.float64)
    nb = _product_neighbours(left, right, plan.neighbours)
    left_search = build_searcher(left)
    right_search = build_searcher(right)
    sums = np.zeros(c.shape)
    counts = np.zeros(len(c))
    mse = np.inf
    seeds = np.random.SeedSequence([seed, 2]).spawn(plan.iterations)
    for it, child in enumerate(seeds):
        half = np.random.default_rng(child).standard_normal((plan.batch // 2, c.shape[1]), dtype=np.float32)
        x = np.concatenate([half, -half])
        labels = nearest_with(left_search, x[:, :d1]) * kr + nearest_with(right_search, x[:, d1:])
        c32 = c.astype(np.float32)
        if it and it % plan.refresh == 0:
            fresh = np.empty_like(nb)
            _k_refine_neighbours(c32, nb, fresh)
            nb = fresh
        _k_walk_assign(x, np.argsort(labels, kind="stable"), c32, nb, labels)
        batch_sums, batch_counts, err = cell_sums(x, labels, c32)
        mse = err / x.size
        sums = plan.forget * sums + batch_sums
        counts = plan.forget * counts + batch_counts
        c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1e-300)[:, None], c)
    return c, plan.iterations, plan.iterations * plan.batch, mse
