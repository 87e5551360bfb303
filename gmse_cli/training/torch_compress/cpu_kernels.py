"""Numba kernels of the CPU training path: per-group statistics and the trust band mask.

On CPU the compressor runs on every linear layer at every step; one parallel pass per kernel
beats the chain of torch ops it replaces several times over. Their plain twin is the torch
code of :meth:`.scalar.TorchQuantize.trust_from_scales` (``use_numba=False``), which the tests
compare them with. The group statistics are the compressors' own
(:mod:`gmse_cli.compress.group_stats`, re-exported here).
"""

from __future__ import annotations

import numpy as np

from gmse_cli.compress.group_stats import (
    STAT_ABSMEAN,
    STAT_AMAX,
    STAT_HI,
    STAT_LO,
    STAT_RMS,
    group_stat,
)
from gmse_cli.kernel_cache import numba

__all__ = ["group_stat", "band_mask", "STAT_RMS", "STAT_AMAX", "STAT_LO", "STAT_HI", "STAT_ABSMEAN"]


@numba.njit(cache=True, parallel=True)
def _k_band_mask(x, g, lo, hi, out):
    rows, cols = x.shape
    for i in numba.prange(rows):
        for b in range(cols // g):
            a, c = lo[i, b], hi[i, b]
            for j in range(b * g, (b + 1) * g):
                v = x[i, j]
                out[i, j] = v >= a and v <= c


def band_mask(x: np.ndarray, group: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: lo[group] <= x <= hi[group] (float32 bounds, one pair per group)."""
    out = np.empty(x.shape, dtype=np.bool_)
    _k_band_mask(x, group, np.ascontiguousarray(lo, dtype=np.float32), np.ascontiguousarray(hi, dtype=np.float32), out)
    return out
