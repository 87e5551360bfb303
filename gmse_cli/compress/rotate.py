"""Blockwise orthonormal Walsh-Hadamard rotation of each row.

Each row is cut into blocks of ``stage.block`` consecutive entries (a power of two) and every
block ``v`` is replaced by ``H D v``: ``H`` the Sylvester-ordered Hadamard matrix scaled by
``1 / sqrt(block)`` (so ``H = H^T = H^-1``), ``D`` a diagonal of +-1 signs drawn from
``np.random.default_rng(stage.seed)`` when ``stage.random_signs`` (QuIP#'s randomized
Hadamard), the identity otherwise. The inverse is ``D H`` (signs after the transform).

The transform is orthonormal, so it changes no Gaussian statistics (GMSE is invariant); on
real weights it spreads outliers across a block before quantization.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.checks import check_input
from gmse_cli.kernel_cache import numba
from gmse_cli.spec import Rotate

__all__ = ["ALGORITHM_VERSION", "hadamard", "signs"]

ALGORITHM_VERSION = 1
"""Bumped whenever the rotation changes; part of the key of every stored GMSE
(:mod:`gmse_cli.gmse.stored`), so none goes stale."""


_F32_MAX = float(np.finfo(np.float32).max)


def signs(stage: Rotate) -> np.ndarray:
    """The +-1 diagonal (float32, length ``stage.block``); all ones without random signs."""
    if not stage.random_signs:
        return np.ones(stage.block, dtype=np.float32)
    draws = np.random.default_rng(stage.seed).integers(0, 2, size=stage.block)
    return (1 - 2 * draws).astype(np.float32)


def _validate(x: np.ndarray, stage: Rotate) -> np.ndarray:
    return check_input(stage, Rotate, "rotate", x)[0]


def _hadamard_reference(x: np.ndarray, stage: Rotate, inverse: bool) -> np.ndarray:
    from scipy.linalg import hadamard  # the reference only: the kernels need no scipy

    block = stage.block
    h = hadamard(block).astype(np.float64) / np.sqrt(block)  # symmetric: H^T = H
    d = signs(stage).astype(np.float64)
    v = x.astype(np.float64).reshape(-1, block)  # (rows * blocks, block)
    v = (v @ h) * d if inverse else (v * d) @ h
    return v.reshape(x.shape).astype(np.float32)


@numba.njit(parallel=True, cache=True)
def _k_fwht(y, block, d, use_signs, inverse):
    """In place: every block of every row of ``y`` becomes H D v (inverse: D H v)."""
    rows, n = y.shape
    scale = np.float32(1.0 / np.sqrt(block))
    for r in numba.prange(rows):
        row = y[r]  # a 1-D view: unit stride lets the butterfly loops vectorize
        for b0 in range(0, n, block):
            v = row[b0 : b0 + block]
            if use_signs and not inverse:
                for j in range(block):
                    v[j] *= d[j]
            # Sylvester butterflies: H_2k = [[H_k, H_k], [H_k, -H_k]] on pairs (j, j + h).
            h = 1
            while h < block:
                for i in range(0, block, 2 * h):
                    lo = v[i : i + h]
                    hi = v[i + h : i + 2 * h]
                    for j in range(h):
                        a = lo[j]
                        c = hi[j]
                        lo[j] = a + c
                        hi[j] = a - c
                h *= 2
            for j in range(block):
                v[j] *= scale
            if use_signs and inverse:
                for j in range(block):
                    v[j] *= d[j]


def hadamard(x: np.ndarray, stage: Rotate, *, inverse: bool, reference: bool = False) -> np.ndarray:
    """Rotate each row of ``x`` (rows, row_length) blockwise; ``inverse`` undoes it.

    ``reference=True`` multiplies by the dense matrix (``scipy.linalg.hadamard``) in float64;
    otherwise a float32 fast transform (numba, parallel over rows, ``log2(block)`` butterfly
    stages). Both return a new float32 array; they agree to float32 rounding.
    """
    x = _validate(x, stage)
    if reference:
        return _hadamard_reference(x, stage, inverse)
    # The butterflies add up to ``block`` entries before the 1/sqrt(block) scale, so a block
    # whose largest |x| exceeds float32's max / block overflows midway though its rotation
    # fits: such an input is scaled down by a power of two first (exact) and back after.
    top = max(float(x.max()), -float(x.min())) if x.size else 0.0
    big = math.isfinite(top) and top * stage.block > _F32_MAX  # inf/nan inputs stay what they were
    shift = math.ceil(math.log2(top * stage.block / _F32_MAX)) if big else 0
    y = np.ldexp(x, -shift).astype(np.float32) if shift else x.copy()
    _k_fwht(y, stage.block, signs(stage), stage.random_signs, inverse)
    if shift:
        with np.errstate(over="ignore"):  # a rotated value beyond float32 is inf, as in float32 arithmetic
            y = np.ldexp(y, shift).astype(np.float32)
    return y
