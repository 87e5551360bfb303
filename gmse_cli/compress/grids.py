"""Scalar grids: their levels and floating-point rounding.

A scalar quantizer is ``Q(x) = s * q(x / s)`` where ``q`` maps a number to the nearest level
of a fixed *native* grid (integers, ExMy floats, a lookup table, Lloyd-Max levels) and ``s``
is a scale. This module knows the native grids:

- :func:`fp_params`, :func:`fp_round_reference` -- an ExMy grid and rounding onto it (numpy);
  the compiled casts are in :mod:`~gmse_cli.compress.fpcast`, so that quadrature never loads
  numba.
- :func:`grid_levels`, :func:`grid_max`, :func:`grid_emax` -- the native levels of a stage.

A grid's exact Gaussian error and its best scale are in :mod:`~gmse_cli.compress.grid_mse`; the
Lloyd-Max levels in :mod:`~gmse_cli.compress.lloyd_max`.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import numpy as np

from gmse_cli.compress.lloyd_max import lloyd_max_levels
from gmse_cli.errors import SpecError
from gmse_cli.spec import FpStyle, GridKind, IntStyle, Overflow, Quantize, fp_max
from gmse_cli.spec.vocab import check_fp_widths

__all__ = [
    "ALGORITHM_VERSION",
    "FpParams",
    "fp_params",
    "fp_round_reference",
    "overflow_value",
    "grid_levels",
    "grid_max",
    "grid_emax",
    "MAX_ENUMERATED_FP_BITS",
]

ALGORITHM_VERSION = 1
"""Bumped whenever what the grids compute changes (levels, casts, and in their sibling modules
:mod:`~gmse_cli.compress.grid_mse` and :mod:`~gmse_cli.compress.lloyd_max` the optimal RMS
constant and the Lloyd-Max levels);
part of the key of every stored GMSE (:mod:`gmse_cli.gmse.stored`), so none goes stale."""

MAX_ENUMERATED_FP_BITS = 16
"""FP grids up to this width (bf16, fp16) are enumerated; wider ones (fp32) are not."""


# --------------------------------------------------------------------------------------------
# Floating-point grids
# --------------------------------------------------------------------------------------------


class FpParams(NamedTuple):
    """What rounding onto an ExMy grid needs (all values exact powers of two or finite)."""

    emin: int  # exponent of the smallest normal binade (1 - bias); subnormals share its step
    mantissa_bits: int
    max_value: float  # largest finite value; larger magnitudes saturate to it


@cache
def fp_params(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> FpParams:
    """Validated rounding parameters of an ExMy format."""
    check_fp_widths(exponent_bits, mantissa_bits, "fp grid")
    style = FpStyle(style)
    if style is FpStyle.IEEE and exponent_bits < 2:
        # With one exponent bit the reserved all-ones exponent leaves no normal numbers.
        raise SpecError(
            f"fp grid e{exponent_bits}m{mantissa_bits}: fp_style 'ieee' needs exponent_bits >= 2 "
            "(use fp_style 'finite')"
        )
    if style is FpStyle.FN and mantissa_bits == 0:
        raise SpecError(
            f"fp grid e{exponent_bits}m0: fp_style 'fn' needs at least one mantissa bit"
        )
    bias = 2 ** (exponent_bits - 1) - 1
    return FpParams(1 - bias, mantissa_bits, fp_max(exponent_bits, mantissa_bits, style))


def fp_round_reference(v: np.ndarray, p: FpParams, over: float | None = None) -> np.ndarray:
    """Round float64 values to the ExMy grid: nearest, ties to even; a result beyond the
    largest finite value becomes ``over`` (of v's sign; None: the largest value, saturating).

    Every operation is exact except ``rint``: the step of v's binade is a power of two, so
    v / step and the product back are exact in float64 (steps lie in [2^-149, 2^127]).
    """
    _, ex = np.frexp(np.abs(v))  # |v| = m * 2^ex with m in [0.5, 1): floor(log2 |v|) = ex - 1
    step = np.ldexp(1.0, np.maximum(ex - 1, p.emin) - p.mantissa_bits)
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(v / step) * step
    return np.where(np.abs(r) > p.max_value, np.copysign(p.max_value if over is None else over, v), r)


def overflow_value(p: FpParams, style: FpStyle, overflow: Overflow) -> float:
    """What a cast beyond the largest finite value gives (sign aside): the largest value when
    saturating; otherwise inf, or NaN for a format without inf (fp_style 'fn')."""
    if Overflow(overflow) is Overflow.SATURATE:
        return p.max_value
    return math.inf if FpStyle(style) is FpStyle.IEEE else math.nan


def _fp_positive_values(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> np.ndarray:
    """Every finite non-negative value of an ExMy format, from its codes."""
    p = fp_params(exponent_bits, mantissa_bits, style)
    codes = np.arange(2 ** (exponent_bits + mantissa_bits), dtype=np.int64)
    field, mant = codes >> mantissa_bits, codes & (2**mantissa_bits - 1)
    frac = mant / 2.0**mantissa_bits
    values = np.where(
        field == 0,
        np.ldexp(frac, p.emin),  # subnormals: 0.m * 2^emin
        np.ldexp(1.0 + frac, field - 1 + p.emin),  # normals: 1.m * 2^(field - bias)
    )
    return values[values <= p.max_value]  # drops inf/NaN codes of the ieee and fn styles


# --------------------------------------------------------------------------------------------
# Native levels of a stage
# --------------------------------------------------------------------------------------------


def _fp_stage_params(stage: Quantize) -> FpParams:
    assert stage.exponent_bits is not None and stage.mantissa_bits is not None
    return fp_params(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)


def grid_levels(stage: Quantize) -> np.ndarray:
    """The sorted native levels (float64) a stage rounds to, before scaling.

    int midrise: (2k + 1 - 2^b) / (2^b - 1); signed: -(2^(b-1) - 1) ... 2^(b-1) - 1; full:
    -2^(b-1) ... 2^(b-1) - 1; asymmetric: 0 ... 2^b - 1 (before the zero point); lut: its
    values; lloyd-max: the Gaussian-optimal levels; fp: every finite value (formats of at most
    16 bits).
    """
    if stage.grid is GridKind.INT:
        assert stage.bits is not None
        n = 2**stage.bits
        k = np.arange(n, dtype=np.float64)
        style = stage.resolved_int_style
        if style is IntStyle.MIDRISE:
            return (2 * k + 1 - n) / (n - 1)
        if style is IntStyle.SIGNED:
            return k[: n - 1] - (n // 2 - 1)
        if style is IntStyle.FULL:
            return k - n // 2
        return k
    if stage.grid is GridKind.LUT:
        assert stage.values is not None
        return np.array(stage.values, dtype=np.float64)
    if stage.grid is GridKind.LLOYD_MAX:
        assert stage.bits is not None
        return lloyd_max_levels(stage.bits).copy()
    assert stage.exponent_bits is not None and stage.mantissa_bits is not None
    width = 1 + stage.exponent_bits + stage.mantissa_bits
    if width > MAX_ENUMERATED_FP_BITS:
        raise SpecError(
            f"grid e{stage.exponent_bits}m{stage.mantissa_bits} has {width} bits; only fp grids of "
            f"at most {MAX_ENUMERATED_FP_BITS} bits are enumerated"
        )
    pos = _fp_positive_values(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
    return np.concatenate([-pos[:0:-1], pos])  # pos[0] is the single zero


def grid_max(stage: Quantize) -> float:
    """What absmax scaling maps amax to: the largest magnitude among the native levels, except
    for the full int grid, whose (2^b - 1) / 2 sits half a step inside its lowest level -2^(b-1)."""
    if stage.grid is GridKind.FP:
        return _fp_stage_params(stage).max_value
    if stage.grid is GridKind.INT:
        assert stage.bits is not None
        n = 2**stage.bits
        return {
            IntStyle.MIDRISE: 1.0,
            IntStyle.SIGNED: n / 2 - 1.0,
            IntStyle.ASYMMETRIC: n - 1.0,
            IntStyle.FULL: (n - 1) / 2,
        }[stage.resolved_int_style]
    return float(np.max(np.abs(grid_levels(stage))))


def grid_emax(stage: Quantize) -> int:
    """floor(log2(grid_max)): OCP MX's emax_elem (e2m1: 2, e4m3: 8, e5m2: 15, int8: 6)."""
    return math.frexp(grid_max(stage))[1] - 1
