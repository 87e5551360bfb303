"""Per-group statistics over the kept entries of each row: one numba kernel and its numpy twin.

A row of ``cols`` entries is cut into ``cols // group`` groups of ``group`` consecutive entries;
a mask (True = kept) leaves dropped entries out of every statistic. Used by the VQ compressor
(its RMS scales), by :func:`~gmse_cli.compress.scalar.scale_range` and by the training
extra's CPU trust masks.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.kernel_cache import numba

__all__ = [
    "STAT_RMS", "STAT_AMAX", "STAT_LO", "STAT_HI", "STAT_ABSMEAN", "group_stat", "group_stat_reference",
]

STAT_RMS, STAT_AMAX, STAT_LO, STAT_HI, STAT_ABSMEAN = range(5)
"""RMS; max |x|; min(0, min x); max(0, max x); mean |x| (0 for a group with nothing kept)."""


@numba.njit(cache=True, parallel=True)
def _k_group_stat(x, keep, has_keep, g, kind, out):
    # float64, entries in order: the twin sums left to right too, so the two agree bit for bit.
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
                elif kind == 3:
                    acc = max(acc, v)
                else:
                    acc += abs(v)
            if kind == 0:
                acc = math.sqrt(acc / max(count, 1.0))
            elif kind == 4:
                acc = acc / max(count, 1.0)
            out[i, b] = acc


def group_stat(x: np.ndarray, keep: np.ndarray | None, group: int, kind: int) -> np.ndarray:
    """(rows, groups) float64 statistic ``kind`` (``STAT_*``) of each group of float32 ``x``
    (rows, cols) over the entries ``keep`` (bool, x's shape; None keeps all); numba, parallel
    over rows, equal to :func:`group_stat_reference`."""
    rows, cols = x.shape
    out = np.empty((rows, cols // group), dtype=np.float64)
    k = keep if keep is not None else np.ones((1, 1), dtype=np.bool_)
    _k_group_stat(x, k, keep is not None, group, kind, out)
    return out


def group_stat_reference(x: np.ndarray, keep: np.ndarray | None, group: int, kind: int) -> np.ndarray:
    """Plain numpy twin of :func:`group_stat`."""
    rows, cols = x.shape
    shape = (rows, cols // group, group)
    v = x.astype(np.float64).reshape(shape)
    kept = np.ones(shape, dtype=bool) if keep is None else keep.reshape(shape)
    if kind == STAT_RMS:
        # cumsum sums left to right, the kernel's order (np.sum would sum pairwise)
        ss = np.cumsum(np.where(kept, v * v, 0.0), axis=-1)[..., -1]
        count = kept.sum(-1).astype(np.float64)
        return np.sqrt(ss / np.maximum(count, 1.0))
    if kind == STAT_ABSMEAN:
        sa = np.cumsum(np.where(kept, np.abs(v), 0.0), axis=-1)[..., -1]
        return sa / np.maximum(kept.sum(-1).astype(np.float64), 1.0)
    if kind == STAT_AMAX:
        return np.where(kept, np.abs(v), 0.0).max(-1)
    if kind == STAT_LO:
        return np.minimum(np.where(kept, v, 0.0).min(-1), 0.0)
    return np.maximum(np.where(kept, v, 0.0).max(-1), 0.0)
