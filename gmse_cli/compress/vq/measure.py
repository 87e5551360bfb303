"""How well a codebook quantizes a standard normal source, and its MSE-optimal scale constant.

Monte Carlo with exact nearest-codeword search, from fixed seeds: the same numbers on every
machine.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.vq.search import Searcher, build_searcher, nearest_with

__all__ = ["heldout_mse", "optimal_constant"]

_CONSTANT_SAMPLES = 2**16  # vectors for the Monte Carlo scale constant


def heldout_mse(cb: np.ndarray, constant: float, *, seed: int, e8p: bool, vectors: int = 2**16) -> tuple[float, int]:
    """(per-coordinate MSE of ``x -> constant * Q(x / constant)`` on ``vectors`` fresh N(0, I)
    vectors from ``seed``, ``vectors``); exact search."""
    x = np.random.default_rng(seed).standard_normal((vectors, cb.shape[1]), dtype=np.float32)
    return _mse_at(build_searcher(cb, e8p=e8p), cb, x, constant), vectors


def _mse_at(sr: Searcher, cb: np.ndarray, x: np.ndarray, constant: float) -> float:
    q = (x / np.float32(constant)).astype(np.float32)
    idx = nearest_with(sr, q)
    diff = x.astype(np.float64) - constant * cb[idx].astype(np.float64)
    return float(np.einsum("ij,ij->", diff, diff)) / x.size


def optimal_constant(cb: np.ndarray, *, e8p: bool, seed: int, xtol: float = 1e-3) -> tuple[float, float]:
    """Monte Carlo: the c minimizing E|x - c Q(x / c)|^2 for x ~ N(0, I), and that MSE.

    :data:`_CONSTANT_SAMPLES` vectors from ``seed``, shared by every c (common random numbers:
    the objective is a deterministic, piecewise-smooth function of c). A geometric grid of 13
    points over a factor of 10 around ``1 / RMS(codebook)`` brackets the minimum; golden-section
    search narrows it to a relative width ``xtol``.
    """
    sr = build_searcher(cb, e8p=e8p)
    x = np.random.default_rng(seed).standard_normal((_CONSTANT_SAMPLES, cb.shape[1]), dtype=np.float32)
    rms = float(np.sqrt((cb.astype(np.float64) ** 2).mean()))

    def f(c: float) -> float:
        return _mse_at(sr, cb, x, c)

    grid = np.geomspace(0.3 / rms, 3.0 / rms, 13)
    values = [f(c) for c in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c1, c2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = f(c1), f(c2)
    while b - a > xtol * (a + b) / 2:
        if f1 <= f2:
            b, c2, f2 = c2, c1, f1
            c1 = b - ratio * (b - a)
            f1 = f(c1)
        else:
            a, c1, f1 = c1, c2, f2
            c2 = a + ratio * (b - a)
            f2 = f(c2)
    best = (a + b) / 2
    return float(best), f(best)
