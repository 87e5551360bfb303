"""A :class:`~gmse_cli.spec.Quantize` stage reduced to the numbers the kernels need.

The integer codes of grids, scale rules and scale storage formats, the constants of the
storage formats (numba freezes module constants into the kernels that read them), and
:class:`Plan`, which the numba kernels, their numpy twins and the torch compressors share.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gmse_cli.compress.grids import (
    FpParams,
    fp_params,
    grid_emax,
    grid_levels,
    grid_max,
    optimal_rms_constant,
)
from gmse_cli.errors import SpecError
from gmse_cli.spec import FpStyle, GridKind, IntStyle, Quantize, ScaleFormat, ScaleRule

# Integer codes the kernels branch on.
MIDRISE, SIGNED, ASYM, FP, TABLE = range(5)
NONE, ABSMAX, RMS, MSE = range(4)
FP32, BF16, FP16, E8M0, E4M3, INT8 = range(6)
RULE_CODE = {
    ScaleRule.NONE: NONE,
    ScaleRule.ABSMAX: ABSMAX,
    ScaleRule.RMS: RMS,
    ScaleRule.MSE: MSE,
}
FORMAT_CODE = {
    ScaleFormat.FP32: FP32,
    ScaleFormat.BF16: BF16,
    ScaleFormat.FP16: FP16,
    ScaleFormat.E8M0: E8M0,
    ScaleFormat.E4M3: E4M3,
    ScaleFormat.INT8: INT8,
}
GLOBAL_FORMATS = (E4M3, INT8)  # stored relative to a per-tensor second-level scale

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
    constant: float  # rms multiplier
    gmax: float
    emax: int
    sfmt: int
    group: int  # entries per group within a row
    tensor: bool  # one group for the whole tensor


def plan(stage: Quantize, row_length: int) -> Plan:
    """The numbers the kernels need for ``stage`` on rows of ``row_length`` (raises
    :class:`~gmse_cli.errors.SpecError` for a combination they refuse)."""
    grid = stage.grid
    if grid is GridKind.INT:
        code = {IntStyle.MIDRISE: MIDRISE, IntStyle.SIGNED: SIGNED, IntStyle.ASYMMETRIC: ASYM}[
            stage.resolved_int_style
        ]
    else:
        code = {GridKind.FP: FP, GridKind.LUT: TABLE, GridKind.LLOYD_MAX: TABLE}[grid]
    if code == ASYM and stage.scale is ScaleRule.RMS:
        raise SpecError(
            "quantize: an asymmetric int grid takes scale 'absmax' or 'mse', not 'rms' "
            "(its zero point comes from the group's min/max)"
        )
    table = grid_levels(stage) if code == TABLE else np.zeros(1)
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
    group = stage.group
    return Plan(
        grid=code,
        n=2 ** (stage.bits or 1),
        fp=fp,
        table=np.ascontiguousarray(table, dtype=np.float64),
        mids=np.ascontiguousarray(0.5 * (table[:-1] + table[1:]), dtype=np.float64),
        rule=RULE_CODE[stage.scale],
        constant=float(constant),
        gmax=grid_max(stage),
        emax=grid_emax(stage),
        sfmt=FORMAT_CODE[stage.scale_format],
        group=row_length if isinstance(group, str) else group,
        tensor=group == "tensor",
    )


def grid_args(p: Plan) -> tuple:
    """The grid tuple ``gr`` the kernels take: (code, n, emin, mantissa bits, max value,
    midpoints, levels)."""
    return (p.grid, p.n, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value, p.mids, p.table)
