"""Casts onto ExMy floating-point grids, compiled: the scalar kernels that quantizers inline
(:func:`k_fp_round_to`, :func:`k_fp_round`) and the array cast :func:`fp_cast` with its plain
numpy twin :func:`fp_cast_reference`.

Apart from :mod:`~gmse_cli.compress.grids` (which defines the grids and stays free of numba,
so that exact quadrature does not load it); what they compute is versioned by
:data:`gmse_cli.compress.grids.ALGORITHM_VERSION`.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.grids import fp_params, fp_round_reference, overflow_value
from gmse_cli.kernel_cache import numba
from gmse_cli.spec import FpStyle, Overflow

__all__ = ["fp_cast", "fp_cast_reference", "k_fp_round", "k_fp_round_to"]


@numba.njit(cache=True, inline="always")
def k_fp_round_to(v: float, emin: int, mantissa_bits: int, max_value: float, over: float) -> float:
    """Scalar twin of :func:`fp_round_reference`: no libm calls, one (NaN) branch.

    With E = max(floor(log2 |v|), emin) - M read off the float64 exponent bits, adding and
    subtracting C = 2^(E + 52) rounds |v| < C to a multiple of ulp(C) = 2^E, to nearest even,
    by the hardware's own float64 rounding. A result above ``max_value`` becomes ``over``.
    """
    if v != v:
        return v
    a = min(abs(v), 2.0 * max_value)  # larger values overflow anyway; keeps C finite
    exponent = (np.float64(a).view(np.int64) >> 52) - 1023
    big = np.int64(np.int64(max(exponent, emin) - mantissa_bits + 52 + 1023) << 52).view(np.float64)
    r = (a + big) - big
    return math.copysign(r if r <= max_value else over, v)


@numba.njit(cache=True, inline="always")
def k_fp_round(v: float, emin: int, mantissa_bits: int, max_value: float) -> float:
    """:func:`k_fp_round_to`, saturating."""
    return k_fp_round_to(v, emin, mantissa_bits, max_value, max_value)


@numba.njit(cache=True, parallel=True)
def _k_fp_cast(
    x: np.ndarray, out: np.ndarray, emin: int, mantissa_bits: int, max_value: float, over: float
) -> None:
    for i in numba.prange(x.size):
        out[i] = k_fp_round_to(np.float64(x[i]), emin, mantissa_bits, max_value, over)


def _prepare(x: np.ndarray, exponent_bits: int, mantissa_bits: int, style: FpStyle, overflow: Overflow):
    """(the grid's parameters, x as contiguous float32, what an overflow becomes)."""
    p = fp_params(exponent_bits, mantissa_bits, FpStyle(style))
    return p, np.ascontiguousarray(x, dtype=np.float32), overflow_value(p, style, overflow)


def fp_cast_reference(
    x: np.ndarray,
    exponent_bits: int,
    mantissa_bits: int,
    style: FpStyle,
    overflow: Overflow = Overflow.SATURATE,
) -> np.ndarray:
    """Plain numpy twin of :func:`fp_cast`."""
    p, x, over = _prepare(x, exponent_bits, mantissa_bits, style, overflow)
    return fp_round_reference(x.astype(np.float64), p, over).astype(np.float32)


def fp_cast(
    x: np.ndarray,
    exponent_bits: int,
    mantissa_bits: int,
    style: FpStyle,
    overflow: Overflow = Overflow.SATURATE,
) -> np.ndarray:
    """Cast float32 values onto the ExMy grid (round to nearest even).

    Returns float32 values of the grid (every ExMy with E <= 8, M <= 23 fits in float32). NaN
    stays NaN; the sign of zero is kept. A value that rounds beyond the largest finite one
    (+-inf included) saturates to +-max, or with ``overflow='inf'`` becomes +-inf (NaN for
    fp_style 'fn'), as an IEEE cast: fp16 overflows from 65520 = 65504 + half its last step
    on. Equal bit for bit to ml_dtypes' casts (of the input clipped to +-max when saturating).
    With M = 0 (powers of two) a tie between 2^e and 2^(e+1) goes up, as ml_dtypes' e8m0 does.
    """
    p, x, over = _prepare(x, exponent_bits, mantissa_bits, style, overflow)
    out = np.empty_like(x)
    _k_fp_cast(x.reshape(-1), out.reshape(-1), p.emin, p.mantissa_bits, p.max_value, over)
    return out
