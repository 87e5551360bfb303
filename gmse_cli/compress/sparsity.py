"""Sparsity masks (magnitude, N:M, blocks) and their exact Gaussian MSEs.

``mask(stage, x)`` returns a boolean array shaped like ``x`` (True = kept); the compressor then
zeroes the rest. The rules, identical in the numba kernels and their numpy twins
(``mask_reference``):

- ``magnitude``: keep the ``round((1 - sparsity) * n)`` entries of largest ``|x|`` among the
  ``n`` entries of each row (granularity ``row``) or of the whole array (``tensor``);
  ``round`` is half-up.
- ``n:m``: in every run of ``m`` consecutive entries of a row keep the ``n`` largest ``|x|``.
- ``block``: cut each row into blocks of ``block`` consecutive entries, rank them by L2 norm
  (sum of squares in float64, summed left to right) and zero the
  ``round(sparsity * blocks)`` smallest, blocks counted per row or over the whole array.

Ties: among equal magnitudes (or block norms) the entry with the lower index ranks higher, so
it is the one kept; for ``tensor`` granularity the index is the row-major flat index.

Inputs are assumed finite (NaN has no rank; it is not checked on the hot path).

Exact Gaussian MSEs (``E||x - C(x)||^2 / E||x||^2`` for iid standard normal ``x``, in the limit
of long rows): :func:`magnitude_gmse` (closed form) and :func:`nm_gmse` (quadrature over the
order statistics of ``|x|``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import integrate, special

from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Sparsify, SparsityPattern

__all__ = ["mask", "mask_reference", "magnitude_gmse", "nm_gmse"]

# Flat indices are packed beside the magnitude into one 64-bit sort key (see _k_keys).
_MAX_FLAT_INDEX = 2**32 - 1


def _round_count(fraction: float, n: int) -> int:
    """``round(fraction * n)``, half-up, clipped to [0, n]."""
    return min(n, max(0, math.floor(fraction * n + 0.5)))


def _validate(stage: Sparsify, x: np.ndarray) -> np.ndarray:
    if not isinstance(stage, Sparsify):
        raise SpecError(f"sparsify: expected a Sparsify stage, got {type(stage).__name__}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"sparsify: x must be 2-D (rows, row_length), got shape {x.shape}")
    stage.check_row_length(x.shape[1])
    if stage.granularity == "tensor" and x.size > _MAX_FLAT_INDEX:
        raise DataError(
            f"sparsify: a tensor of {x.size} entries is above the supported 2^32 - 1 for "
            "granularity 'tensor' (use granularity 'row' or split the tensor)"
        )
    return x


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
    sq = np.square(x.astype(np.float64)).reshape(x.shape[0], -1, block)
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
        a = np.abs(x).reshape(rows, n // stage.m, stage.m)
        return _top_mask_reference(a, stage.n).reshape(rows, n)
    if stage.pattern is SparsityPattern.MAGNITUDE:
        a = np.abs(x)
        if stage.granularity == "tensor":
            return _top_mask_reference(a.reshape(-1), _round_count(stage.density, x.size)).reshape(rows, n)
        return _top_mask_reference(a, _round_count(stage.density, n))
    assert stage.block is not None
    norms = _block_norms_reference(x, stage.block)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        keep = norms.size - _round_count(stage.sparsity, norms.size)
        kept = _top_mask_reference(norms.reshape(-1), keep).reshape(norms.shape)
    else:
        kept = _top_mask_reference(norms, blocks - _round_count(stage.sparsity, blocks))
    return np.repeat(kept, stage.block, axis=1)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _k_keys(values, first_index, keys):
    """keys[i] orders entries by |values[i]|, then by lower flat index (first_index + i)."""
    # |v| as float32 bits orders like |v| itself (non-negative IEEE floats sort as integers);
    # the complemented index in the low half makes the lower index the larger key among equal
    # |v|, so every key is distinct and selection needs no tie handling.
    bits = np.abs(values).view(np.uint32)
    for i in range(values.size):
        keys[i] = (np.uint64(bits[i]) << np.uint64(32)) | (
            np.uint64(_MAX_FLAT_INDEX) - np.uint64(first_index + i)
        )


@numba.njit(cache=True)
def _k_select_top(keys, keep, out):
    """out[i] = keys[i] is among the ``keep`` largest of ``keys`` (all distinct)."""
    n = keys.size
    if keep == 0:
        out[:] = False
        return
    if keep == n:
        out[:] = True
        return
    # Quickselect (numpy's introselect): the (n - keep)-th smallest key is the smallest kept.
    threshold = np.partition(keys, n - keep)[n - keep]
    for i in range(n):
        out[i] = keys[i] >= threshold


@numba.njit(parallel=True, cache=True)
def _k_magnitude_rows(x, keep, out):
    rows, n = x.shape
    for r in numba.prange(rows):
        keys = np.empty(n, dtype=np.uint64)
        _k_keys(x[r], 0, keys)
        _k_select_top(keys, keep, out[r])


@numba.njit(parallel=True, cache=True)
def _k_magnitude_keys(x, keys):
    rows, n = x.shape
    for r in numba.prange(rows):
        _k_keys(x[r], r * n, keys[r * n : (r + 1) * n])


@numba.njit(parallel=True, cache=True)
def _k_nm(x, n_keep, m, out):
    rows, n = x.shape
    drop = m - n_keep
    for r in numba.prange(rows):
        a = np.empty(m, dtype=np.float32)
        for g in range(0, n, m):
            for i in range(m):
                a[i] = abs(x[r, g + i])
            # Pick whichever side is smaller, one extreme per pass: O(min(n, m - n) * m).
            if n_keep <= drop:
                for i in range(m):
                    out[r, g + i] = False
                for _ in range(n_keep):
                    best = -1
                    for i in range(m):  # largest untaken; strict '>' keeps the lower index on ties
                        if not out[r, g + i] and (best < 0 or a[i] > a[best]):
                            best = i
                    out[r, g + best] = True
            else:
                for i in range(m):
                    out[r, g + i] = True
                for _ in range(drop):
                    worst = -1
                    for i in range(m):  # smallest kept; '<=' drops the higher index on ties
                        if out[r, g + i] and (worst < 0 or a[i] <= a[worst]):
                            worst = i
                    out[r, g + worst] = False


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
        _k_nm(x, stage.n, stage.m, out)
        return out
    if stage.pattern is SparsityPattern.MAGNITUDE:
        if stage.granularity == "tensor":
            keys = np.empty(x.size, dtype=np.uint64)
            _k_magnitude_keys(x, keys)
            _k_select_top(keys, _round_count(stage.density, x.size), out.reshape(-1))
        else:
            _k_magnitude_rows(x, _round_count(stage.density, n), out)
        return out
    assert stage.block is not None
    norms = np.empty((rows, n // stage.block), dtype=np.float64)
    _k_block_norms(x, stage.block, norms)
    kept = np.empty(norms.shape, dtype=np.bool_)
    blocks = norms.shape[1]
    if stage.granularity == "tensor":
        _k_block_top(norms.reshape(-1), norms.size - _round_count(stage.sparsity, norms.size), kept.reshape(-1))
    else:
        _k_block_rows(norms, blocks - _round_count(stage.sparsity, blocks), kept)
    _k_expand_blocks(kept, stage.block, out)
    return out


# --------------------------------------------------------------------------------------------
# Exact Gaussian MSEs
# --------------------------------------------------------------------------------------------


def magnitude_gmse(sparsity: float) -> float:
    """GMSE of unstructured magnitude pruning of a fraction ``sparsity`` (infinite rows).

    Pruning zeroes ``|x| < t`` with ``P(|x| < t) = s``, i.e. ``t = Phi^-1((1 + s) / 2)``, and
    loses ``E[x^2; |x| < t] = (2 Phi(t) - 1) - 2 t phi(t)``.
    """
    s = float(sparsity)
    if not (0.0 <= s < 1.0) or not math.isfinite(s):
        raise SpecError(f"magnitude_gmse: sparsity={sparsity} is outside [0, 1)")
    if s == 0.0:
        return 0.0
    t = float(special.ndtri((1.0 + s) / 2.0))
    phi = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    return s - 2.0 * t * phi  # 2 Phi(t) - 1 = s by the choice of t


def nm_gmse(n: int, m: int, *, epsabs: float = 1e-14, epsrel: float = 1e-12) -> float:
    """Exact GMSE of N:M pruning (keep the ``n`` largest ``|x|`` of every ``m``) on iid normals.

    An entry of magnitude ``y`` is pruned iff at most ``m - n - 1`` of the other ``m - 1``
    entries of its group are smaller, each independently with probability
    ``F(y) = P(|x| < y) = erf(y / sqrt 2)``. Hence, summing the order-statistic densities,

        GMSE = int_0^inf y^2 * 2 phi(y) * P[Binomial(m - 1, F(y)) <= m - n - 1] dy,

    integrated by adaptive quadrature (``scipy.integrate.quad`` with ``epsabs``/``epsrel``).
    """
    if not (isinstance(n, int | np.integer) and isinstance(m, int | np.integer)) or not 1 <= n <= m:
        raise SpecError(f"nm_gmse: need integers 1 <= n <= m, got n={n}, m={m}")
    if n == m:
        return 0.0
    pruned_max = m - n - 1

    def integrand(y: float) -> float:
        f = math.erf(y / math.sqrt(2.0))
        pruned = special.bdtr(pruned_max, m - 1, f)
        return y * y * math.sqrt(2.0 / math.pi) * math.exp(-0.5 * y * y) * pruned

    # The integrand is smooth and negligible beyond y = 12 (density < 1e-30).
    value, _ = integrate.quad(integrand, 0.0, 12.0, epsabs=epsabs, epsrel=epsrel, limit=200)
    return float(value)
