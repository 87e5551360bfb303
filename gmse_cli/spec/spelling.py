"""One spelling per format: a quantize setting written out at the value its absence means is
read as left out, so equal formats compare, and hash to one GMSE cache key, equal."""

from __future__ import annotations

import math
from typing import Any

from gmse_cli.spec.vocab import (
    FpStyle,
    GridKind,
    IntStyle,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
    lowercase,
)

__all__ = ["default_fp_style", "one_spelling"]


def default_fp_style(exponent_bits: int, mantissa_bits: int) -> FpStyle:
    """An fp grid's style when none is given: IEEE from 5 exponent bits, OCP's e4m3fn, else finite."""
    if exponent_bits >= 5:
        return FpStyle.IEEE
    if (exponent_bits, mantissa_bits) == (4, 3):
        return FpStyle.FN
    return FpStyle.FINITE


def one_spelling(data: Any) -> Any:
    """A quantize stage's raw fields with the settings that repeat a default left out: an e8m0
    rounding that is the rule's default (mxfp4-floor is mxfp4), int_style midrise, an fp grid's
    own style and width, a lut's bits, an absmean constant of 1; and a Lloyd-Max grid's rms
    constant set to its optimum, exactly 1 (its levels are the Gaussian-MSE-optimal quantizer:
    lm3 is lloyd-max-3)."""
    if not isinstance(data, dict):
        return data
    rule = lowercase(data.get("scale", ScaleRule.RMS))
    grid = lowercase(data.get("grid"))
    asym = grid == GridKind.INT and lowercase(data.get("int_style")) == IntStyle.ASYMMETRIC
    default_rounding = (
        ScaleRounding.NEAREST if rule in (ScaleRule.RMS, ScaleRule.ABSMEAN, ScaleRule.MSE)
        else ScaleRounding.FLOOR if rule == ScaleRule.ABSMAX and not asym else None
    )
    rounding = lowercase(data.get("scale_rounding"))
    if (
        default_rounding is not None
        and isinstance(rounding, str) and rounding == default_rounding
        and lowercase(data.get("scale_format")) == ScaleFormat.E8M0
    ):
        data = {k: v for k, v in data.items() if k != "scale_rounding"}
    if grid == GridKind.LLOYD_MAX and rule == ScaleRule.RMS and data.get("scale_constant") is None:
        data = {**data, "scale_constant": 1.0}
    constant = data.get("scale_constant")
    if rule == ScaleRule.ABSMEAN and type(constant) in (int, float) and constant == 1:
        data = {k: v for k, v in data.items() if k != "scale_constant"}  # absmean's default C
    # the derived or default grid settings (a lut's bits: log2 of its number of values)
    implied: dict[str, Any] = {}
    if grid == GridKind.INT:
        implied["int_style"] = IntStyle.MIDRISE
    e, m = data.get("exponent_bits"), data.get("mantissa_bits")
    if grid == GridKind.FP and all(type(v) is int for v in (e, m)):
        implied.update(fp_style=default_fp_style(e, m), bits=1 + e + m)
    values = data.get("values")
    if grid == GridKind.LUT and isinstance(values, list | tuple) and len(values) >= 2:
        implied["bits"] = math.log2(len(values))
    for key, value in implied.items():
        given = data.get(key)
        if given is not None and type(given) is not bool and lowercase(given) == value:
            data = {k: v for k, v in data.items() if k != key}
    return data
