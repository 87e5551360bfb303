"""Numba kernels of the CPU training path: per-group statistics and the trust band mask.

On CPU the compressor runs on every linear layer at every step; one parallel pass per kernel
beats the chain of torch ops it replaces several times over. Their plain twin is the torch
code of :meth:`.scalar.TorchQuantize.trust_from_scales` (``use_numba=False``), which the tests
compare them with.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["group_stat", "band_mask", "STAT_RMS", "STAT_AMAX", "STAT_LO", "STAT_HI"]

STAT_RMS, STAT_AMAX, STAT_LO, STAT_HI = range(4)


@numba.njit(cache=True, parallel=True)
def _k_group_stat(x, keep, has_keep, g, kind, out):
    rows, cols = x.shape
    for i in numba.prange(rows):
        for b in range(cols // g):
            acc = 0.0
            count = 0.0
            for j in range(b * g, (b + 1) * g):
                if has_keep and not keep[i, j]:
                    continue
                v = np.float64(x[i, j])
                count += 1.0
                if kind == 0:
                    acc += v * v
                elif kind == 1:
                    acc = max(acc, abs(v))
                elif kind == 2:
                    acc = min(acc, v)
                else:
                    acc = max(acc, v)
            if kind == 0:
                acc = math.sqrt(acc / max(count, 1.0))
            out[i, b] = acc


@numba.njit(cache=True, parallel=True)
def _k_band_mask(x, g, lo, hi, out):
    rows, cols = x.shape
    for i in numba.prange(rows):
        for b in range(cols // g):
            a, c = lo[i, b], hi[i, b]
            for j in range(b * g, (b + 1) * g):
                v = x[i, j]
                out[i, j] = v >= a and v <= c


def group_stat(x: np.ndarray, keep: np.ndarray | None, group: int, kind: int) -> np.ndarray:
    """(rows, groups) float64: RMS, max |x|, min(0, min x) or max(0, max x) over kept entries."""
    rows, cols = x.shape
    out = np.empty((rows, cols // group), dtype=np.float64)
    k = keep if keep is not None else np.ones((1, 1), dtype=np.bool_)
    _k_group_stat(x, k, keep is not None, group, kind, out)
    return out


def band_mask(x: np.ndarray, group: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: lo[group] <= x <= hi[group] (float32 bounds, one pair per group)."""
    out = np.empty(x.shape, dtype=np.bool_)
    _k_band_mask(x, group, np.ascontiguousarray(lo, dtype=np.float32), np.ascontiguousarray(hi, dtype=np.float32), out)
    return out
