"""Utility moves out of Lloyd's local optima (LBG-U, Fritzke 1997).

Lloyd's algorithm stops at a local optimum that depends on its start: on a 2-D Gaussian the
splitting start of :func:`~gmse_cli.compress.vq.lloyd.lbg` leaves the 16-codeword codebook a few
tenths of a percent above the ring arrangement (1 + 6 + 9) that HIGGS publishes. A *move*
takes the codeword of least utility (the error that removing it would add: the sum over its
cell of the squared distance to the second-nearest codeword minus that to the nearest) and
places it beside the codeword of largest distortion, splitting that cell along its principal
axis; Lloyd then runs again, and the move is kept if the error fell. When the best candidate
move fails, the next ``patience - 1`` pairs (by utility and distortion rank) are tried before
stopping.
"""

from __future__ import annotations

import numpy as np

from gmse_cli.compress.vq.lloyd import lloyd_exact
from gmse_cli.kernel_cache import numba

__all__ = ["lbg_u", "two_nearest", "two_nearest_reference"]

_GAIN = 1e-7  # a move must lower the training MSE by this relative amount to count


@numba.njit(cache=True, parallel=True)
def _k_two_nearest(x, c, labels, d1, d2):
    n, d = x.shape
    k = c.shape[0]
    for r in numba.prange(n):
        best, second, j1 = np.inf, np.inf, 0
        for j in range(k):
            s = 0.0
            for i in range(d):
                t = np.float64(x[r, i]) - c[j, i]
                s += t * t
            if s < best:
                second, best, j1 = best, s, j
            elif s < second:
                second = s
        labels[r], d1[r], d2[r] = j1, best, second


def two_nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the nearest codeword, its squared distance, the second-nearest's squared
    distance) for each row of float32 ``x`` (n, d), codewords ``c`` (K >= 2, d) in float64;
    brute force, the lowest index on ties. numba, equal to :func:`two_nearest_reference`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(c, dtype=np.float64)
    labels = np.empty(len(x), dtype=np.int64)
    d1, d2 = np.empty(len(x)), np.empty(len(x))
    _k_two_nearest(x, c, labels, d1, d2)
    return labels, d1, d2


def two_nearest_reference(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`two_nearest`."""
    dist = np.zeros((len(x), len(c)))
    for i in range(x.shape[1]):  # coordinates summed in order, as the kernel sums them
        dist += np.square(x[:, i, None].astype(np.float64) - np.asarray(c, np.float64)[None, :, i])
    order = np.argsort(dist, axis=1, kind="stable")
    rows = np.arange(len(x))
    return order[:, 0], dist[rows, order[:, 0]], dist[rows, order[:, 1]]


def _split_beside(x: np.ndarray, labels: np.ndarray, c: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``c`` with codeword ``lo`` moved beside ``hi``: the two half a standard deviation either
    side of ``hi`` along its cell's principal axis."""
    cell = x[labels == hi].astype(np.float64)
    moved = c.copy()
    if len(cell) < 2:
        moved[lo] = c[hi] + 1e-3
        return moved
    cov = np.atleast_2d(np.cov(cell.T))
    values, vectors = np.linalg.eigh(cov)
    step = vectors[:, -1] * (0.5 * np.sqrt(max(values[-1], 0.0)))
    moved[lo], moved[hi] = c[hi] + step, c[hi] - step
    return moved


def lbg_u(
    x: np.ndarray,
    c: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    patience: int,
    max_moves: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int, int, float]:
    """Lloyd from ``c`` on the sample ``x``, then utility moves (module docstring) while one
    lowers the MSE, at most ``max_moves``. Each Lloyd run stops as
    :func:`~gmse_cli.compress.vq.lloyd.lloyd_exact` does (``tol``, ``max_iter``).

    Returns (codewords float64, moves kept, iterations of the last Lloyd run, training MSE).
    """
    c, _, iterations, mse = lloyd_exact(x, c, tol=tol, max_iter=max_iter, rng=rng)
    moves = 0
    while moves < max_moves and len(c) > 2:
        labels, d1, d2 = two_nearest(x, c)
        k = len(c)
        utility = np.bincount(labels, weights=d2 - d1, minlength=k)
        distortion = np.bincount(labels, weights=d1, minlength=k)
        lows = np.argsort(utility, kind="stable")
        highs = np.argsort(-distortion, kind="stable")
        for attempt in range(patience):
            lo = int(lows[attempt])
            hi = int(next(h for h in highs[attempt:] if h != lo))
            trial, _, its, trial_mse = lloyd_exact(
                x, _split_beside(x, labels, c, lo, hi), tol=tol, max_iter=max_iter, rng=rng
            )
            if trial_mse < mse * (1 - _GAIN):
                c, mse, iterations = trial, trial_mse, its
                moves += 1
                break
        else:
            break
    return c, moves, iterations, mse
