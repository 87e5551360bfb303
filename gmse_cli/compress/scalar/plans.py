"""A :class:`~gmse_cli.spec.Quantize` stage reduced to the numbers the kernels need.

The integer codes of grids, scale rules and scale storage formats, the constants of the
storage formats (numba freezes module constants into the kernels that read them), and
:class:`Plan`, which the numba kernels, their numpy twins and the torch compressors share.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gmse_cli.compress.grid_mse import optimal_rms_constant
from gmse_cli.compress.grids import (
    FpParams,
    fp_params,
    grid_emax,
    grid_levels,
    grid_max,
    overflow_value,
)
from gmse_cli.errors import SpecError
from gmse_cli.spec import (
    FpStyle,
    GridKind,
    IntStyle,
    LutRounding,
    Overflow,
    Quantize,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
)

# Integer codes the kernels branch on. TABLE32: a lut with bitsandbytes' float32 arithmetic.
MIDRISE, SIGNED, ASYM, FP, TABLE, FULL, TABLE32 = range(7)
NONE, ABSMAX, RMS, MSE, ABSMEAN = range(5)
FP32, BF16, FP16, E8M0, E4M3, INT8, DQ8 = range(7)
# e8m0 rounding: ScaleRounding's five, and the asymmetric absmax default (ceil of the raw scale).
E8_FLOOR, E8_CEIL, E8_EVEN, E8_RCEIL, E8_NEAREST, E8_CEIL_RAW = range(6)
E8_CODE = {
    ScaleRounding.FLOOR: E8_FLOOR,
    ScaleRounding.CEIL: E8_CEIL,
    ScaleRounding.EVEN: E8_EVEN,
    ScaleRounding.RCEIL: E8_RCEIL,
    ScaleRounding.NEAREST: E8_NEAREST,
}
RULE_CODE = {
    ScaleRule.NONE: NONE,
    ScaleRule.ABSMAX: ABSMAX,
    ScaleRule.RMS: RMS,
    ScaleRule.MSE: MSE,
    ScaleRule.ABSMEAN: ABSMEAN,
}
FORMAT_CODE = {
    ScaleFormat.FP32: FP32,
    ScaleFormat.BF16: BF16,
    ScaleFormat.FP16: FP16,
    ScaleFormat.E8M0: E8M0,
    ScaleFormat.E4M3: E4M3,
    ScaleFormat.INT8: INT8,
    ScaleFormat.DQ8: DQ8,
}
GLOBAL_FORMATS = (E4M3, INT8)  # stored relative to a per-tensor second-level scale
TENSOR_FORMATS = (E4M3, INT8, DQ8)  # stored scales depend on every group of the tensor

BF16_P = fp_params(8, 7, FpStyle.IEEE)
FP16_P = fp_params(5, 10, FpStyle.IEEE)
E4M3_P = fp_params(4, 3, FpStyle.FN)
E4M3_MAX = 448.0
# Plain module constants: numba freezes them into the kernels.
BF16_EMIN, BF16_M, BF16_MAX = BF16_P
FP16_EMIN, FP16_M, FP16_MAX = FP16_P
E4M3_EMIN, E4M3_M = E4M3_P.emin, E4M3_P.mantissa_bits
INT8_MAX = 255.0
E8M0_EXP = 127  # e8m0 holds 2^-127 ... 2^127


class Plan(NamedTuple):
    """A stage reduced to the numbers the kernels need (validated, defaults resolved)."""

    grid: int
    n: int  # number of integer codes (2^b) for int grids
    fp: FpParams  # fp grids; unused otherwise
    table: np.ndarray  # lut / lloyd-max levels (float64, sorted); a 1-element stand-in otherwise
    mids: np.ndarray  # their midpoints
    rule: int
    constant: float  # rms / absmean multiplier
    gmax: float
    emax: int
    sfmt: int
    group: int  # entries per group within a row
    tensor: bool  # one group for the whole tensor
    e8: int  # e8m0 rounding (E8_*)
    over: float  # what a cast beyond its largest value gives: the element cast of a plain
    # cast, else the bf16 / fp16 scale cast (max = saturate, inf); e8m0: 2^127 or NaN


def plan(stage: Quantize, row_length: int) -> Plan:
    """The numbers the kernels need for ``stage`` on rows of ``row_length`` (raises
    :class:`~gmse_cli.errors.SpecError` for a combination they refuse)."""
    grid = stage.grid
    if grid is GridKind.INT:
        code = {
            IntStyle.MIDRISE: MIDRISE,
            IntStyle.SIGNED: SIGNED,
            IntStyle.ASYMMETRIC: ASYM,
            IntStyle.FULL: FULL,
        }[stage.resolved_int_style]
    elif grid is GridKind.LUT and stage.lut_rounding is LutRounding.BITSANDBYTES:
        code = TABLE32
    else:
        code = {GridKind.FP: FP, GridKind.LUT: TABLE, GridKind.LLOYD_MAX: TABLE}[grid]
    if code == ASYM and stage.scale in (ScaleRule.RMS, ScaleRule.ABSMEAN):
        raise SpecError(
            f"quantize: an asymmetric int grid takes scale 'absmax' or 'mse', not '{stage.scale}' "
            "(its zero point comes from the group's min/max)"
        )
    table = grid_levels(stage) if code in (TABLE, TABLE32) else np.zeros(1)
    if code == TABLE32:
        # bitsandbytes' midpoints: float32 sums of float32 levels, halved
        mids = (table[:-1].astype(np.float32) + table[1:].astype(np.float32)) / np.float32(2)
    else:
        mids = 0.5 * (table[:-1] + table[1:])
    fp = (
        fp_params(stage.exponent_bits, stage.mantissa_bits, stage.resolved_fp_style)
        if code == FP
        else BF16_P
    )
    constant = 1.0
    if stage.scale is ScaleRule.RMS:
        constant = (
            stage.scale_constant
            if stage.scale_constant is not None
            else optimal_rms_constant(stage)
        )
    elif stage.scale is ScaleRule.ABSMEAN:
        constant = stage.scale_constant if stage.scale_constant is not None else 1.0
    group = stage.group
    return Plan(
        grid=code,
        n=2 ** (stage.bits or 1),
        fp=fp,
        table=np.ascontiguousarray(table, dtype=np.float64),
        mids=np.ascontiguousarray(mids, dtype=np.float64),
        rule=RULE_CODE[stage.scale],
        constant=float(constant),
        gmax=grid_max(stage),
        emax=grid_emax(stage),
        sfmt=FORMAT_CODE[stage.scale_format],
        group=row_length if isinstance(group, str) else group,
        tensor=group == "tensor",
        e8=_e8_code(stage, code),
        over=_over(stage, fp),
    )


def _e8_code(stage: Quantize, code: int) -> int:
    if stage.scale_rounding is not None:
        return E8_CODE[stage.scale_rounding]
    if stage.scale is not ScaleRule.ABSMAX:
        return E8_NEAREST
    return E8_CEIL_RAW if code == ASYM else E8_FLOOR


def _over(stage: Quantize, fp: FpParams) -> float:
    inf = stage.overflow is Overflow.INF
    if stage.scale is ScaleRule.NONE:
        return overflow_value(fp, stage.resolved_fp_style, stage.overflow)
    if stage.scale_format is ScaleFormat.E8M0:
        return np.nan if inf else 2.0**E8M0_EXP
    if stage.scale_format is ScaleFormat.BF16:
        return np.inf if inf else BF16_MAX
    return np.inf if inf else FP16_MAX  # read only by fp16 scales


def grid_args(p: Plan) -> tuple:
    """The grid tuple ``gr`` the kernels take: (code, n, emin, mantissa bits, max value,
    midpoints, levels)."""
    return (p.grid, p.n, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value, p.mids, p.table)


def scale_args(p: Plan, sfmt: int | None = None) -> tuple:
    """The scale tuple ``st`` the kernels take: (scale format code, e8m0 rounding, emax, even
    increment, overflow value); ``sfmt`` overrides the format (the mse rule measures the
    tensor-wide formats with float32 scales)."""
    return (p.sfmt if sfmt is None else sfmt, p.e8, p.emax, even_increment(p.fp.mantissa_bits), float(p.over))


def even_increment(mantissa_bits: int) -> int:
    """What torchao's EVEN mode adds to amax's float32 bits before dropping the mantissa: half
    a unit in the element's last mantissa place."""
    return 1 << (22 - mantissa_bits) if mantissa_bits < 23 else 0
