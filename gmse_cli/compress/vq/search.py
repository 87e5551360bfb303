"""Nearest-codeword search structures, and the brute-force reference every search equals.

:func:`build_searcher` turns a codebook into a :class:`Searcher`, the arrays that the kernels of
:mod:`gmse_cli.compress.vq.search_kernels` read:

- d = 1: the sorted codewords (binary search);
- d = 2 (up to 4096 codewords): a uniform grid of cells, each holding the codewords that can be
  nearest to some point of the cell (the rest are provably farther than another codeword);
- E8P: the 256 absolute patterns, their norms and parities (best sign pattern in closed form);
- otherwise (flat): codewords transposed for float32 scores ``|c|^2 - 2 q.c``, above 1024
  codewords in up to 6-D cut into groups that a triangle-inequality bound skips.

The search is exact: :func:`nearest_with` equals :func:`nearest_reference` bit for bit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from gmse_cli.compress.vq.e8p import e8p_abs_patterns
from gmse_cli.compress.vq.search_kernels import E8P, FLAT, GRID, LINE, assign
from gmse_cli.errors import DataError
from gmse_cli.kernel_cache import numba

__all__ = ["Searcher", "build_searcher", "nearest_with", "nearest_reference", "sq_dist_reference"]

_GRID_MAX = 4096  # d = 2 codebooks up to this size use the cell grid
_GROUPS_MIN = 1024  # flat search groups codewords above this size ...
_GROUPS_MAX_DIM = 6  # ... in up to 6-D (beyond, the triangle bound prunes too little to pay)


class Searcher(NamedTuple):
    """Arrays of one codebook's search structure (unused fields are 1-element dummies)."""

    kind: int
    c: np.ndarray  # (K, d) float32 codewords, original order
    # flat: codewords permuted so that groups are contiguous, transposed for vector loops
    ct: np.ndarray  # (d, K) float32
    cn: np.ndarray  # (K,) float32 squared norms (permuted order)
    perm: np.ndarray  # (K,) int64 permuted position -> original index
    gstart: np.ndarray  # (G + 1,) int64
    gcent: np.ndarray  # (G, d) float64 group centres
    grad: np.ndarray  # (G,) float64 group radii
    cmax: float  # largest codeword norm
    # grid (d = 2)
    lo: np.ndarray  # (2,) float64
    inv_w: float
    cells: int
    cstart: np.ndarray  # (cells^2 + 1,) int64
    cidx: np.ndarray  # candidates, original indices, ascending per cell
    # e8p
    at: np.ndarray  # (8, 256) float32 absolute patterns, transposed
    an: np.ndarray  # (256,) float32 squared norms
    apar: np.ndarray  # (256,) int64 parity of the pattern's coordinate sum


def sq_dist_reference(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, K) float64 squared distances, coordinates summed in order (the kernels' order)."""
    out = np.zeros((q.shape[0], c.shape[0]))
    for i in range(q.shape[1]):
        out += np.square(q[:, i, None].astype(np.float64) - c[None, :, i].astype(np.float64))
    return out


def nearest_reference(codewords: np.ndarray, q: np.ndarray, *, chunk_elements: int = 2**22) -> np.ndarray:
    """Brute force: index of the nearest codeword to each row of ``q`` (lowest index on ties).

    Memory: ``chunk_elements`` float64 distances at a time (32 MiB by default).
    """
    codewords = np.ascontiguousarray(codewords, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty(q.shape[0], dtype=np.int64)
    step = max(1, chunk_elements // codewords.shape[0])
    for start in range(0, q.shape[0], step):
        out[start : start + step] = np.argmin(sq_dist_reference(q[start : start + step], codewords), axis=1)
    return out


def nearest_with(sr: Searcher, q: np.ndarray) -> np.ndarray:
    """Index of the codeword of ``sr`` nearest to each row of ``q`` (n, dim)."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    out = np.empty((q.shape[0], 1), dtype=np.int64)
    if q.shape[0]:
        assign(sr, q, np.ones((q.shape[0], 1), dtype=np.float32), q.shape[1], out)
    return out[:, 0]


def _dummy_f32(*shape: int) -> np.ndarray:
    return np.zeros(shape or (1,), dtype=np.float32)


def _searcher(kind: int, c: np.ndarray, **fields) -> Searcher:
    base = dict(
        kind=kind,
        c=c,
        ct=_dummy_f32(1, 1),
        cn=_dummy_f32(),
        perm=np.zeros(1, np.int64),
        gstart=np.zeros(2, np.int64),
        gcent=np.zeros((1, 1)),
        grad=np.zeros(1),
        cmax=float(np.sqrt((c.astype(np.float64) ** 2).sum(1).max())),
        lo=np.zeros(2),
        inv_w=1.0,
        cells=1,
        cstart=np.zeros(2, np.int64),
        cidx=np.zeros(1, np.int64),
        at=_dummy_f32(1, 1),
        an=_dummy_f32(),
        apar=np.zeros(1, np.int64),
    )
    base.update(fields)
    return Searcher(**base)


def build_searcher(c: np.ndarray, *, e8p: bool = False) -> Searcher:
    """The search structure of codebook ``c`` (K, d); ``e8p``: ``c`` is
    :func:`~gmse_cli.compress.vq.e8p.e8p_codebook`."""
    c = np.ascontiguousarray(c, dtype=np.float32)
    k, d = c.shape
    if e8p:
        a = e8p_abs_patterns()
        return _searcher(
            E8P,
            c,
            at=np.ascontiguousarray(a.T, dtype=np.float32),
            an=(a**2).sum(1).astype(np.float32),
            apar=(a.sum(1).round().astype(np.int64) & 1),
        )
    if d == 1:
        if np.any(np.diff(c[:, 0]) <= 0):
            raise DataError("vq: a 1-dimensional codebook must hold distinct values in ascending order")
        return _searcher(LINE, c)
    if d == 2 and k <= _GRID_MAX:
        return _build_grid(c)
    return _build_flat(c)


def _build_flat(c: np.ndarray) -> Searcher:
    k, d = c.shape
    c64 = c.astype(np.float64)
    if k <= _GROUPS_MIN or d > _GROUPS_MAX_DIM:
        labels = np.zeros(k, dtype=np.int64)
        groups = 1
    else:
        groups = int(2 ** round(math.log2(k) / 2))  # about sqrt(K) groups of sqrt(K)
        labels = _coarse_labels(c64, groups)
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    gstart = np.searchsorted(labels, np.arange(groups + 1)).astype(np.int64)
    cs = c64[order]
    gcent = np.zeros((groups, d))
    grad = np.zeros(groups)
    for g in range(groups):
        members = cs[gstart[g] : gstart[g + 1]]
        if len(members):
            gcent[g] = members.mean(0)
            grad[g] = np.sqrt(((members - gcent[g]) ** 2).sum(1)).max()
    # Radii rounded up a little so rounding in |q - centre| never prunes a group wrongly.
    grad = grad * (1 + 1e-9) + 1e-12
    return _searcher(
        FLAT,
        c,
        ct=np.ascontiguousarray(c[order].T),
        cn=(cs**2).sum(1).astype(np.float32),
        perm=order.astype(np.int64),
        gstart=gstart,
        gcent=gcent,
        grad=grad,
    )


def _coarse_labels(c64: np.ndarray, groups: int, iterations: int = 8) -> np.ndarray:
    """Partition codewords into ``groups`` clusters (a few Lloyd steps from evenly spaced ones).

    Any partition keeps the search exact; tighter clusters only prune more.
    """
    centres = c64[np.linspace(0, len(c64) - 1, groups).astype(np.int64)].copy()
    labels = np.zeros(len(c64), dtype=np.int64)
    c32 = c64.astype(np.float32)
    for _ in range(iterations):
        labels = nearest_with(build_searcher(centres.astype(np.float32)), c32)
        counts = np.bincount(labels, minlength=groups)
        for i in range(c64.shape[1]):
            sums = np.bincount(labels, weights=c64[:, i], minlength=groups)
            centres[:, i] = np.where(counts > 0, sums / np.maximum(counts, 1), centres[:, i])
    return labels


def _build_grid(c: np.ndarray) -> Searcher:
    k = c.shape[0]
    c64 = c.astype(np.float64)
    lo = c64.min(0)
    hi = c64.max(0)
    span = float((hi - lo).max())
    pad = max(span, 1.0) * 0.25
    lo = lo - pad
    width = (span + 2 * pad)
    cells = int(min(128, max(8, 4 * math.ceil(math.sqrt(k)))))
    w = width / cells
    cstart, cidx = _k_grid_lists(c64, lo, w, cells)
    return _searcher(GRID, c, lo=lo, inv_w=1.0 / w, cells=cells, cstart=cstart, cidx=cidx)


@numba.njit(cache=True)
def _k_grid_lists(c, lo, w, cells):
    """For each cell, the codewords that can be nearest to some point of it (CSR, ascending).

    Codeword c can be nearest somewhere in box B only if its distance to B is at most the
    smallest, over codewords, of the farthest distance to B. Boxes are widened by a hair so
    that a query's computed cell always contains it. Two passes: count, then fill.
    """
    k = c.shape[0]
    eps = 1e-7 * w * cells
    counts = np.zeros(cells * cells + 1, dtype=np.int64)
    lists = np.empty(0, dtype=np.int64)
    for fill in range(2):
        if fill:
            counts = np.cumsum(counts)
            lists = np.empty(counts[-1], dtype=np.int64)
        for cx in range(cells):
            for cy in range(cells):
                x0 = lo[0] + cx * w - eps
                x1 = lo[0] + (cx + 1) * w + eps
                y0 = lo[1] + cy * w - eps
                y1 = lo[1] + (cy + 1) * w + eps
                min_far = np.inf
                for j in range(k):
                    fx = max(abs(c[j, 0] - x0), abs(c[j, 0] - x1))
                    fy = max(abs(c[j, 1] - y0), abs(c[j, 1] - y1))
                    min_far = min(min_far, fx * fx + fy * fy)
                cell = cx * cells + cy
                p = counts[cell] if fill else 0
                for j in range(k):
                    nx = max(x0 - c[j, 0], 0.0, c[j, 0] - x1)
                    ny = max(y0 - c[j, 1], 0.0, c[j, 1] - y1)
                    if nx * nx + ny * ny <= min_far * (1 + 1e-9):
                        if fill:
                            lists[p] = j
                        p += 1
                if not fill:
                    counts[cell + 1] = p
    return counts, lists
