"""The scalar quantization stage: a grid applied element by element after dividing by a
per-group scale, with its validation, storage cost and label."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from gmse_cli.errors import SpecError
from gmse_cli.spec.sizes import check_divides, checked_group_size, granularity_size
from gmse_cli.spec.spelling import default_fp_style, one_spelling
from gmse_cli.spec.vocab import (
    DEFAULT_ROW_LENGTH,
    MAX_ROW_LENGTH,
    SCALE_FORMAT_BITS,
    CaseInsensitive,
    FpStyle,
    Granularity,
    GridKind,
    IntStyle,
    LutRounding,
    Overflow,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
    ScaleStats,
    SpecModel,
    lowercase,
)

__all__ = ["Quantize", "LUT_MAGNITUDE"]

LUT_MAGNITUDE = (1e-30, 1e30)
"""The magnitudes a nonzero lut value may take."""
_MAX_INT_BITS = 16
_CONSTANT_RULES = (ScaleRule.RMS, ScaleRule.ABSMEAN)  # the rules scale_constant multiplies
# rules whose scale is a statistic about zero, or none: no min/max for an asymmetric zero point
_CENTRED_RULES = (ScaleRule.RMS, ScaleRule.ABSMEAN, ScaleRule.NONE)


class Quantize(SpecModel):
    """A scalar grid applied element by element after dividing by a per-group scale."""

    kind: Literal["quantize"] = "quantize"
    grid: Annotated[GridKind, CaseInsensitive]
    bits: int | None = Field(
        default=None, description="element bits (int, lloyd-max); derived for fp and lut"
    )
    int_style: Annotated[IntStyle | None, CaseInsensitive] = Field(
        default=None, description="int grids only; default midrise"
    )
    exponent_bits: int | None = Field(default=None, ge=1, le=8)
    mantissa_bits: int | None = Field(default=None, ge=0, le=23)
    fp_style: Annotated[FpStyle | None, CaseInsensitive] = None
    values: tuple[float, ...] | None = Field(
        default=None, description="lut grid values in native units, strictly increasing"
    )
    scale: Annotated[ScaleRule, CaseInsensitive] = ScaleRule.RMS
    scale_constant: float | None = Field(
        default=None,
        gt=0,
        le=LUT_MAGNITUDE[1],  # as a lut value: past it the exact GMSE's c^2 terms overflow to nan
        description="rms rule: scale = constant * RMS, None = the Gaussian-MSE-optimal one; "
        "absmean rule: scale = constant * mean |x|, None = 1",
    )
    group: Granularity = "row"
    scale_format: Annotated[ScaleFormat, CaseInsensitive] = ScaleFormat.FP32
    scale_stats: Annotated[ScaleStats, CaseInsensitive] = Field(
        default=ScaleStats.KEPT,
        description="after a sparsify stage: scale statistics over the 'kept' entries or 'all' "
        "entries of the group before pruning (QuEST's FourEight)",
    )
    scale_rounding: Annotated[ScaleRounding | None, CaseInsensitive] = Field(
        default=None, description="e8m0 scales only: floor, ceil, even, rceil, nearest; None = the rule's default"
    )
    overflow: Annotated[Overflow, CaseInsensitive] = Field(
        default=Overflow.SATURATE,
        description="beyond the largest finite value: saturate, or inf/NaN as an IEEE cast (the "
        "element cast of a plain cast; the scale cast of bf16, fp16 and e8m0 scales)",
    )
    lut_rounding: Annotated[LutRounding, CaseInsensitive] = Field(
        default=LutRounding.NEAREST, description="lut grids: nearest (exact), or bitsandbytes' float32 arithmetic"
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Fields at their defaults are left out, so every spec written before the fields
        # existed keeps its serialized form, and with it training run keys (content hashes)
        # and results files.
        data = handler(self)
        for field in ("scale_stats", "scale_rounding", "overflow", "lut_rounding"):
            if getattr(self, field) == type(self).model_fields[field].default:
                data.pop(field, None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        return one_spelling(data)

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        value = lowercase(value)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)  # '64' reads as 64; '６４', '6_4', '64.0' or '+64' are no group size
        if isinstance(value, str) and value not in ("row", "tensor"):
            raise SpecError(f"quantize: group '{value}' must be 'row', 'tensor' or a whole number from 1 to "
                            f"{MAX_ROW_LENGTH:,}")
        return checked_group_size(value, "quantize")

    @model_validator(mode="after")
    def _check(self) -> Quantize:
        self._check_grid()
        self._check_scale_storage()
        return self

    def _check_grid(self) -> None:
        grid = self.grid
        if grid in (GridKind.INT, GridKind.LLOYD_MAX):
            if self.bits is None:
                raise SpecError(f"quantize: grid '{grid}' needs 'bits' (1 to {_MAX_INT_BITS})")
            if not 1 <= self.bits <= _MAX_INT_BITS:
                raise SpecError(
                    f"quantize: bits={self.bits} is outside 1..{_MAX_INT_BITS} for grid '{grid}'"
                )
            if grid is GridKind.INT and self.resolved_int_style is IntStyle.SIGNED and self.bits < 2:
                raise SpecError("quantize: a signed int grid needs bits >= 2 (use midrise for 1 bit)")
            if grid is GridKind.LLOYD_MAX and self.bits > 8:
                raise SpecError(f"quantize: lloyd-max bits={self.bits} is above the supported 8")
        if grid is GridKind.FP:
            if self.exponent_bits is None or self.mantissa_bits is None:
                raise SpecError("quantize: grid 'fp' needs exponent_bits and mantissa_bits")
            width = 1 + self.exponent_bits + self.mantissa_bits
            if self.bits is not None and self.bits != width:
                raise SpecError(
                    f"quantize: bits={self.bits} disagrees with e{self.exponent_bits}m"
                    f"{self.mantissa_bits} ({width} bits); leave bits out for fp grids"
                )
            if self.fp_style is FpStyle.FN and self.mantissa_bits == 0:
                raise SpecError("quantize: fp_style 'fn' needs at least one mantissa bit")
        elif self.exponent_bits is not None or self.mantissa_bits is not None or self.fp_style is not None:
            raise SpecError(f"quantize: exponent_bits/mantissa_bits/fp_style only apply to grid 'fp', not '{grid}'")
        if self.resolved_int_style is IntStyle.ASYMMETRIC and grid is GridKind.INT and self.scale in _CENTRED_RULES:
            raise SpecError(
                f"quantize: an asymmetric int grid takes scale 'absmax' or 'mse', not '{self.scale}' "
                "(its zero point comes from the group's min/max)"
            )
        if self.int_style is not None and grid is not GridKind.INT:
            raise SpecError(f"quantize: int_style only applies to grid 'int', not '{grid}'")
        if grid is GridKind.LUT:
            if not self.values or len(self.values) < 2:
                raise SpecError("quantize: grid 'lut' needs 'values', a list of at least 2 numbers")
            if self.bits is not None:
                raise SpecError(
                    f"quantize: bits={self.bits} disagrees with a lut of {len(self.values)} values "
                    f"({math.log2(len(self.values)):g} bits); leave bits out for lut grids"
                )
            if len(self.values) > 2**_MAX_INT_BITS:
                raise SpecError(f"quantize: a lut holds at most {2**_MAX_INT_BITS} values")
            if any(not math.isfinite(v) for v in self.values):
                raise SpecError("quantize: lut values must be finite")
            if any(b <= a for a, b in zip(self.values, self.values[1:], strict=False)):
                raise SpecError("quantize: lut values must be strictly increasing")
            if max(abs(v) for v in self.values) == 0:
                raise SpecError("quantize: lut values must not all be zero")
            # The grid is normalized by its largest value: subnormal or astronomically large
            # values would make that division (and the clipping search) overflow.
            odd = [v for v in self.values if v != 0 and not LUT_MAGNITUDE[0] <= abs(v) <= LUT_MAGNITUDE[1]]
            if odd:
                raise SpecError(
                    f"quantize: lut value {odd[0]!r} is outside the range of magnitudes a lut takes "
                    f"(0 or {LUT_MAGNITUDE[0]:g} to {LUT_MAGNITUDE[1]:g})"
                )
        elif self.values is not None:
            raise SpecError(f"quantize: 'values' only applies to grid 'lut', not '{grid}'")
        if self.scale is ScaleRule.NONE and self.group != "row":
            raise SpecError("quantize: scale 'none' takes no group (leave group out)")
        if self.scale is ScaleRule.NONE and self.scale_format is not ScaleFormat.FP32:
            raise SpecError(
                f"quantize: scale 'none' stores no scales: scale_format '{self.scale_format}' does not "
                "apply (leave scale_format out)"
            )
        if self.scale_constant is not None and self.scale not in _CONSTANT_RULES:
            raise SpecError(
                f"quantize: scale_constant only applies to scale 'rms' or 'absmean', not '{self.scale}'"
            )
        if self.scale is ScaleRule.NONE and grid is not GridKind.FP:
            raise SpecError(f"quantize: scale 'none' is only meaningful for fp grids, not '{grid}'")
        if self.scale is ScaleRule.NONE and self.scale_stats is ScaleStats.ALL:
            raise SpecError("quantize: scale_stats 'all' needs a scale rule (scale 'none' takes no statistics)")
        if self.lut_rounding is not LutRounding.NEAREST and grid is not GridKind.LUT:
            raise SpecError(f"quantize: lut_rounding '{self.lut_rounding}' only applies to grid 'lut', not '{grid}'")

    def _check_scale_storage(self) -> None:
        """Scale rounding, overflow and the dq8 format: what each combines with."""
        fmt, rounding, rule = self.scale_format, self.scale_rounding, self.scale
        asym = self.grid is GridKind.INT and self.resolved_int_style is IntStyle.ASYMMETRIC
        if rounding is not None:
            if fmt is not ScaleFormat.E8M0:
                raise SpecError(
                    f"quantize: scale_rounding '{rounding}' only applies to e8m0 scales, not '{fmt}'"
                )
            if rule is ScaleRule.NONE:
                raise SpecError("quantize: scale_rounding needs a scale rule (got scale 'none')")
            amax_based = (ScaleRounding.FLOOR, ScaleRounding.CEIL, ScaleRounding.EVEN)
            if rounding in amax_based and (rule is not ScaleRule.ABSMAX or asym):
                raise SpecError(
                    f"quantize: scale_rounding '{rounding}' is defined from a symmetric group's amax: "
                    f"it needs scale 'absmax' and a symmetric grid (use 'rceil' or 'nearest')"
                )
            if rounding is ScaleRounding.EVEN and self.grid is not GridKind.FP:
                raise SpecError(
                    f"quantize: scale_rounding 'even' rounds amax to the element's mantissa bits: "
                    f"it needs an fp grid, not '{self.grid}'"
                )
        if self.overflow is Overflow.INF:
            if rule is ScaleRule.NONE:
                if self.resolved_fp_style is FpStyle.FINITE:
                    raise SpecError(
                        f"quantize: overflow 'inf' needs an inf or NaN code, which e{self.exponent_bits}m"
                        f"{self.mantissa_bits} with fp_style 'finite' lacks (use overflow 'saturate')"
                    )
            elif fmt not in (ScaleFormat.BF16, ScaleFormat.FP16, ScaleFormat.E8M0):
                raise SpecError(
                    f"quantize: overflow 'inf' applies to plain casts and to bf16, fp16 and e8m0 "
                    f"scales; '{fmt}' scales cannot overflow on float32 inputs (use 'saturate')"
                )
        if fmt is ScaleFormat.DQ8 and (rule is not ScaleRule.ABSMAX or asym or self.group == "tensor"):
            raise SpecError(
                "quantize: dq8 scales (bitsandbytes double quantization) need scale 'absmax', a "
                "symmetric grid and groups of a row (not 'tensor')"
            )

    # -- derived properties ------------------------------------------------------------------

    @property
    def resolved_int_style(self) -> IntStyle:
        return self.int_style or IntStyle.MIDRISE

    @property
    def resolved_fp_style(self) -> FpStyle:
        assert self.exponent_bits is not None and self.mantissa_bits is not None
        return self.fp_style or default_fp_style(self.exponent_bits, self.mantissa_bits)

    @property
    def element_bits(self) -> float:
        """Bits to store one element (log2 of the level count for a lut)."""
        if self.grid is GridKind.FP:
            assert self.exponent_bits is not None and self.mantissa_bits is not None
            return float(1 + self.exponent_bits + self.mantissa_bits)
        if self.grid is GridKind.LUT:
            assert self.values is not None
            return math.log2(len(self.values))
        assert self.bits is not None
        return float(self.bits)

    def scale_bits(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Amortized bits per element spent on scales (and zero points)."""
        if self.scale is ScaleRule.NONE:
            return 0.0
        per_group = SCALE_FORMAT_BITS[self.scale_format]
        if self.grid is GridKind.INT and self.resolved_int_style is IntStyle.ASYMMETRIC:
            per_group += self.element_bits  # an integer zero point per group
        size = granularity_size(self.group, row_length)
        return 0.0 if math.isinf(size) else per_group / size

    def check_row_length(self, row_length: int) -> None:
        if isinstance(self.group, int):
            check_divides("quantize group size", self.group, row_length)

    def label(self) -> str:
        if self.grid is GridKind.FP:
            core = f"fp e{self.exponent_bits}m{self.mantissa_bits}"
        elif self.grid is GridKind.LUT:
            core = f"lut[{len(self.values or ())}]"
        elif self.grid is GridKind.INT:
            core = f"int{self.bits} {self.resolved_int_style}"
        else:
            core = f"lloyd-max{self.bits}"
        if self.scale is ScaleRule.NONE:
            return core + (", overflow to inf" if self.overflow is Overflow.INF else "")
        group = self.group if isinstance(self.group, str) else f"g{self.group}"
        over = " over all entries" if self.scale_stats is ScaleStats.ALL else ""
        extra = f" ({self.scale_rounding})" if self.scale_rounding is not None else ""
        extra += ", overflow to inf" if self.overflow is Overflow.INF else ""
        extra += ", bitsandbytes rounding" if self.lut_rounding is LutRounding.BITSANDBYTES else ""
        return f"{core}, {self.scale} scale per {group}{over} in {self.scale_format}{extra}"
