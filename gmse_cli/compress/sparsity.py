"""Sparsity masks (magnitude, N:M, blocks) and their exact Gaussian MSEs.

``mask(stage, x)`` returns a boolean array shaped like ``x`` (True = kept); the compressor then
zeroes the rest. The rules, identical in the numba kernels and their numpy twins
(``mask_reference``):

- ``magnitude``: keep the ``round((1 - sparsity) * n)`` entries of largest ``|x|`` among the
  ``n`` entries of each row (granularity ``row``) or of the whole array (``tensor``);
  ``round`` is half-up.
- ``n:m``: in every run of ``m`` consecutive entries of a row keep the ``n`` largest ``|x|``;
  with blocks (``N:MxK``, ``block`` = K > 1): cut the row into blocks of K consecutive
  entries, rank them by L2 norm (sum of squares in float64, summed left to right, as for the
  ``block`` pattern) and in every run of M consecutive blocks keep the N of largest norm.
- ``block``: cut each row into blocks of ``block`` consecutive entries, rank them by L2 norm
  (sum of squares in float64, summed left to right) and zero the
  ``round(sparsity * blocks)`` smallest, blocks counted per row or over the whole array.

Ties: among equal magnitudes (or block norms) the entry (block) with the lower index ranks
higher, so it is the one kept; for ``tensor`` granularity the index is the row-major flat
index. (QuEST's FourEight quantizer leaves ties to ``torch.topk``, which promises no order.)

Inputs are assumed finite (NaN has no rank; it is not checked on the hot path).

Exact Gaussian MSEs (:func:`magnitude_gmse`, :func:`nm_gmse`) live in
:mod:`~gmse_cli.compress.sparsity_gmse` (no numba: quadrature alone) and are importable here.
"""

from __future__ import annotations

import numpy as np

from gmse_cli.compress.checks import check_input
from gmse_cli.compress.sparsity_gmse import magnitude_gmse, nm_gmse
from gmse_cli.kernel_cache import numba
from gmse_cli.spec import Sparsify, SparsityPattern
from gmse_cli.spec.sizes import round_count

__all__ = ["ALGORITHM_VERSION", "mask", "mask_reference", "magnitude_gmse", "nm_gmse", "round_count"]

ALGORITHM_VERSION = 1
"""Bumped whenever a mask rule or an exact GMSE changes; part of the key of every stored GMSE
(:mod:`gmse_cli.gmse.stored`), so none goes stale."""


def _validate(stage: Sparsify, x: np.ndarray) -> np.ndarray:
    return check_input(stage, Sparsify, "sparsify", x)[0]


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def _top_mask_reference(values: np.ndarray, keep: int) -> np.ndarray:
    """Per last axis: True at the ``keep`` largest values, lower index first among ties."""
    out = np.zeros(values.shape, dtype=bool)
    if keep == 0:
        return out
    # A stable sort of the negated values lists equal values in index order.
    order = np.argsort(-values, axis=-1, kind="stable")[..., :keep]
    np.put_along_axis(out, order, True, axis=-1)
    return out


def _block_norms_reference(x: np.ndarray, block: int) -> np.ndarray:
    sq = np.square(x.astype(np.float64)).reshape(x.shape[0], x.shape[1] // block, block)  # no -1: rows may be 0
    acc = np.zeros(sq.shape[:2])
    for j in range(block):  # left to right, the kernel's order, so the twins agree bit for bit
        acc += sq[:, :, j]
    return acc  # (rows, blocks per row)


def mask_reference(stage: Sparsify, x: np.ndarray) -> np.ndarray:
    """Plain numpy twin of :func:`mask` (sorts instead of selecting)."""
    x = _validate(stage, x)
    rows, n = x.shape
    if stage.pattern is SparsityPattern.NM:
        assert stage.n is not None and stage.m is not None
        k = stage.unit
        a = np.abs(x) if k == 1 else _block_norms_reference(x, k)  # (rows, n // k)
        kept = _top_mask_reference(a.reshape(rows, n // (stage.m * k), stage.m), stage.n)
        return np.repeat(kept.reshape(rows, n // k), k, axis=1)
    if stage.pattern is SparsityPattern.MAGNITUDE:
        a = np.abs(x)
        if stage.granularity == "tensor":
            return _top_mask_reference(a.reshape(-1), round_count(stage.density, x.size)).reshape(rows, n)
        return _top_mask_reference(a, round_count(stage.density, n))
    assert stage.block is not None
    norms = _block_norms_reference(x, stage.block)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        keep = norms.size - round_count(stage.sparsity, norms.size)
        kept = _top_mask_reference(norms.reshape(-1), keep).reshape(norms.shape)
    else:
        kept = _top_mask_reference(norms, blocks - round_count(stage.sparsity, blocks))
    return np.repeat(kept, stage.block, axis=1)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


_ABS = np.uint32(0x7FFFFFFF)  # float32 bits without the sign: |x| as an integer of equal order


@numba.njit(cache=True)
def _k_top(raw, keep, out, hist, cand):
    """out[i] = entry i is among the ``keep`` largest |x| (lower index first among equals).

    ``raw`` holds the float32 bits of x. Non-negative IEEE floats order like their bit
    patterns, so this is a radix select on the 31 magnitude bits: a histogram of the top 11
    bits finds the bin holding the keep-th largest; its members (collected in index order) are
    narrowed by the next 11, then the last 9 bits to the exact threshold value T. Entries above
    T are kept, and of those equal to T the first ones up to the count. Three passes over the
    data (histogram, collect, output), unlike a sort. ``hist`` (2048) and ``cand`` (len(raw))
    are scratch.
    """
    n = raw.size
    if keep == 0 or keep == n:
        for i in range(n):
            out[i] = keep == n
        return
    hist[:] = 0
    for i in range(n):
        hist[(raw[i] & _ABS) >> 20] += 1
    need = keep
    b = 2047
    while hist[b] < need:
        need -= hist[b]
        b -= 1
    m = 0
    for i in range(n):
        if ((raw[i] & _ABS) >> 20) == b:
            cand[m] = i
            m += 1
    prefix = np.uint32(b)
    for shift, width in ((9, 11), (0, 9)):
        top = (1 << width) - 1
        hist[: top + 1] = 0
        for p in range(m):
            hist[((raw[cand[p]] & _ABS) >> shift) & top] += 1
        b = top
        while hist[b] < need:
            need -= hist[b]
            b -= 1
        prefix = (prefix << np.uint32(width)) | np.uint32(b)
        kept = 0
        for p in range(m):  # keep only the members of the chosen bin, in index order
            if ((raw[cand[p]] & _ABS) >> shift) == prefix:
                cand[kept] = cand[p]
                kept += 1
        m = kept
    threshold = prefix  # now every candidate equals it; keep the first `need` of them
    for i in range(n):
        out[i] = (raw[i] & _ABS) > threshold
    for p in range(need):
        out[cand[p]] = True


@numba.njit(parallel=True, cache=True)
def _k_magnitude_rows(raw, keep, out):
    rows, n = raw.shape
    for r in numba.prange(rows):
        hist = np.empty(2048, dtype=np.int64)
        cand = np.empty(n, dtype=np.int64)
        _k_top(raw[r], keep, out[r], hist, cand)


_NM_RANK_MAX = 16  # up to this M, rank by counting (M compares per entry, vectorized)


@numba.njit(parallel=True, cache=True)
def _k_nm(x, n_keep, m, out):
    """N:M over the entries of ``x`` (rows, n) by |x|: float32 entries, or the float64 block
    norms of N:MxK (compiled once per dtype; the scratch copies keep it, so no rounding)."""
    rows, n = x.shape
    groups = n // m
    for r in numba.prange(rows):
        row = x[r]
        if m <= _NM_RANK_MAX:
            # Position-major copy (at[i, g] = |entry i of group g|): the counting loops below
            # then run over contiguous groups and vectorize.
            at = np.empty((m, groups), dtype=x.dtype)
            rank = np.empty(groups, dtype=np.int32)
            for g in range(groups):
                for i in range(m):
                    at[i, g] = abs(row[g * m + i])
            for i in range(m):
                ai = at[i]
                rank[:] = 0
                for j in range(m):  # entry j outranks i: larger, or equal and earlier
                    aj = at[j]
                    if j < i:
                        for g in range(groups):
                            rank[g] += aj[g] >= ai[g]
                    elif j > i:
                        for g in range(groups):
                            rank[g] += aj[g] > ai[g]
                for g in range(groups):
                    out[r, g * m + i] = rank[g] < n_keep
            continue
        # Large M: pick whichever side is smaller, one extreme per pass: O(min(n, M - n) * M).
        a = np.empty(m, dtype=x.dtype)
        keep = out[r]
        drop = m - n_keep
        for g in range(0, n, m):
            for i in range(m):
                a[i] = abs(row[g + i])
            if n_keep <= drop:
                for i in range(m):
                    keep[g + i] = False
                for _ in range(n_keep):
                    best = -1
                    for i in range(m):  # largest untaken; strict '>' keeps the lower index on ties
                        if not keep[g + i] and (best < 0 or a[i] > a[best]):
                            best = i
                    keep[g + best] = True
            else:
                for i in range(m):
                    keep[g + i] = True
                for _ in range(drop):
                    worst = -1
                    for i in range(m):  # smallest kept; '<=' drops the higher index on ties
                        if keep[g + i] and (worst < 0 or a[i] <= a[worst]):
                            worst = i
                    keep[g + worst] = False


@numba.njit(parallel=True, cache=True)
def _k_block_norms(x, block, norms):
    rows, n = x.shape
    for r in numba.prange(rows):
        for b in range(n // block):
            acc = 0.0
            for j in range(b * block, (b + 1) * block):
                v = np.float64(x[r, j])
                acc += v * v
            norms[r, b] = acc


@numba.njit(parallel=True, cache=True)
def _k_block_rows(norms, keep, kept):
    rows = norms.shape[0]
    for r in numba.prange(rows):
        _k_block_top(norms[r], keep, kept[r])


@numba.njit(cache=True)
def _k_block_top(norms, keep, kept):
    # A stable sort of the negated norms: ties keep index order, as in the numpy twin.
    order = np.argsort(-norms, kind="mergesort")
    kept[:] = False
    for i in range(keep):
        kept[order[i]] = True


@numba.njit(parallel=True, cache=True)
def _k_expand_blocks(kept, block, out):
    rows, blocks = kept.shape
    for r in numba.prange(rows):
        for b in range(blocks):
            for j in range(b * block, (b + 1) * block):
                out[r, j] = kept[r, b]


def mask(stage: Sparsify, x: np.ndarray) -> np.ndarray:
    """The keep-mask of ``stage`` for ``x`` (rows, row_length): numba, parallel over rows.

    Equal element for element to :func:`mask_reference`.
    """
    x = _validate(stage, x)
    rows, n = x.shape
    out = np.empty(x.shape, dtype=np.bool_)
    if stage.pattern is SparsityPattern.NM:
        assert stage.n is not None and stage.m is not None
        k = stage.unit
        if k == 1:
            _k_nm(x, stage.n, stage.m, out)
            return out
        norms = np.empty((rows, n // k), dtype=np.float64)
        _k_block_norms(x, k, norms)
        kept = np.empty(norms.shape, dtype=np.bool_)
        _k_nm(norms, stage.n, stage.m, kept)
        _k_expand_blocks(kept, k, out)
        return out
    if stage.pattern is SparsityPattern.MAGNITUDE:
        raw = x.view(np.uint32)
        if stage.granularity == "tensor":
            flat = raw.reshape(-1)
            cand = np.empty(flat.size, dtype=np.int64)
            _k_top(flat, round_count(stage.density, x.size), out.reshape(-1), np.empty(2048, dtype=np.int64), cand)
        else:
            _k_magnitude_rows(raw, round_count(stage.density, n), out)
        return out
    assert stage.block is not None
    norms = np.empty((rows, n // stage.block), dtype=np.float64)
    _k_block_norms(x, stage.block, norms)
    kept = np.empty(norms.shape, dtype=np.bool_)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        _k_block_top(norms.reshape(-1), norms.size - round_count(stage.sparsity, norms.size), kept.reshape(-1))
    else:
        _k_block_rows(norms, blocks - round_count(stage.sparsity, blocks), kept)
    _k_expand_blocks(kept, stage.block, out)
    return out
