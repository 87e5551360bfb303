"""Lloyd's algorithm (k-means) on a fixed sample, for codebooks up to about 1024 codewords.

:func:`lbg` grows a codebook by splitting (Linde-Buzo-Gray), running Lloyd with exact
assignment after each split; in 1-D, Lloyd runs on the sorted sample with prefix sums. Cell
statistics are summed by one thread in sample order (:func:`cell_sums`), so a codebook does not
depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from gmse_cli.compress.vq.search import build_searcher, nearest_with
from gmse_cli.kernel_cache import numba

__all__ = ["lbg", "lloyd_exact", "canonical", "cell_sums"]


def _accumulate_reference(x: np.ndarray, labels: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-cell sums and counts, and the total squared error, in float64 sample order."""
    k = c.shape[0]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.stack(
        [np.bincount(labels, weights=x[:, i].astype(np.float64), minlength=k) for i in range(x.shape[1])], axis=1
    )
    diff = x.astype(np.float64) - c[labels].astype(np.float64)
    err = np.cumsum(np.square(diff).sum(1))[-1] if len(x) else 0.0
    return sums, counts, float(err)


@numba.njit(cache=True)
def _k_accumulate(x, labels, c, sums, counts):
    # One thread, samples in order: the sums (hence the codebook) do not depend on the thread
    # count. Cheap next to the assignment.
    n, d = x.shape
    sums[:] = 0.0
    counts[:] = 0.0
    err = 0.0
    for r in range(n):
        k = labels[r]
        counts[k] += 1.0
        e = 0.0
        for i in range(d):
            v = np.float64(x[r, i])
            sums[k, i] += v
            t = v - np.float64(c[k, i])
            e += t * t
        err += e
    return err


def cell_sums(x: np.ndarray, labels: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-cell float64 sums and counts of the samples ``x`` (n, d) in cells ``labels``, and
    their total squared error to the codewords ``c``: numba, equal to
    :func:`_accumulate_reference`."""
    sums = np.empty(c.shape)
    counts = np.empty(c.shape[0])
    err = _k_accumulate(x, labels, np.ascontiguousarray(c, dtype=np.float32), sums, counts)
    return sums, counts, err


def _centroids(x: np.ndarray, labels: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Cell means (empty cells keep their codeword), counts, and the MSE of ``labels``."""
    sums, counts, err = cell_sums(x, labels, c)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], c)
    return new, counts, err / x.size


def lloyd_exact(
    x: np.ndarray, c: np.ndarray, *, tol: float, max_iter: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Lloyd's algorithm with exact assignment. Returns codewords, labels, iterations, MSE.

    Stops when an iteration improves the MSE by less than ``tol`` relative. An empty cell is
    re-seeded beside the codeword with the largest distortion.
    """
    c = c.astype(np.float64)
    prev = np.inf
    it = 0
    labels = np.zeros(len(x), dtype=np.int64)
    mse = np.inf
    while it < max_iter:
        it += 1
        cf = _canonical_for_search(c)
        labels = nearest_with(build_searcher(cf), x)
        c, counts, mse = _centroids(x, labels, cf)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            err = np.bincount(labels, weights=((x - cf[labels]) ** 2).sum(1), minlength=len(c))
            for j, worst in zip(empty, np.argsort(-err, kind="stable"), strict=False):
                c[j] = c[worst] + 1e-3 * rng.standard_normal(c.shape[1])
            prev = np.inf
            continue
        if prev - mse <= tol * mse:
            break
        prev = mse
    return c, labels, it, mse


def _canonical_for_search(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    if c.shape[1] == 1:
        c = np.sort(c, axis=0)
        # Lloyd keeps 1-D levels distinct; a collision (two empty-cell reseeds) is nudged apart.
        for i in range(1, len(c)):
            if c[i, 0] <= c[i - 1, 0]:
                c[i, 0] = np.nextafter(c[i - 1, 0], np.float32(np.inf))
    return np.ascontiguousarray(c)


def canonical(c: np.ndarray) -> np.ndarray:
    """Codewords in lexicographic order (first coordinate first), float32."""
    c = np.asarray(c, dtype=np.float32)
    order = np.lexsort(tuple(c[:, i] for i in range(c.shape[1] - 1, -1, -1)))
    return np.ascontiguousarray(c[order])


def _lloyd_1d(x: np.ndarray, codewords: int, *, tol: float, max_iter: int):
    """Lloyd in 1-D on sorted samples: cells are runs between midpoints, so each iteration is
    a binary search per boundary plus prefix sums (O(K log n), not O(n)).

    Starts at the sample quantiles (i + 1/2) / K. A sample exactly at a midpoint belongs to the
    lower level (the search's tie rule). Returns levels, labels, iterations, MSE.
    """
    v = np.sort(x.astype(np.float64))
    n = len(v)
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])
    c = np.quantile(v, (np.arange(codewords) + 0.5) / codewords)
    prev = np.inf
    mse = np.inf
    it = 0
    while it < max_iter:
        it += 1
        c = _canonical_for_search(c[:, None])[:, 0].astype(np.float64)
        # cell j holds the samples in (mid_{j-1}, mid_j]
        edges = np.concatenate([[0], np.searchsorted(v, (c[1:] + c[:-1]) / 2, side="right"), [n]])
        count = np.diff(edges).astype(np.float64)
        total = s1[edges[1:]] - s1[edges[:-1]]
        squares = s2[edges[1:]] - s2[edges[:-1]]
        mse = float((squares - 2 * c * total + count * c * c).sum()) / n
        c = np.where(count > 0, total / np.maximum(count, 1.0), c)  # empty cells keep their level
        if prev - mse <= tol * mse:
            break
        prev = mse
    labels = np.zeros(0, dtype=np.int64)  # not needed by callers in 1-D
    return c[:, None], labels, it, mse


def lbg(x: np.ndarray, codewords: int, *, tol: float, max_iter: int, rng: np.random.Generator):
    """Linde-Buzo-Gray: start at the mean, split every codeword in two, run Lloyd, repeat.

    Returns codewords (float64), labels, iterations of the last Lloyd run, and its MSE.
    """
    d = x.shape[1]
    if d == 1:
        return _lloyd_1d(x[:, 0], codewords, tol=tol, max_iter=max_iter)
    c = x.astype(np.float64).mean(0, keepdims=True)
    while True:
        if len(c) == codewords:
            return lloyd_exact(x, c, tol=tol, max_iter=max_iter, rng=rng)
        step = 0.01 * rng.standard_normal(c.shape)
        c = np.concatenate([c + step, c - step])
        c, _, _, _ = lloyd_exact(x, c, tol=max(tol, 1e-4), max_iter=max_iter, rng=rng)
