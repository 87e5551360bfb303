"""The four stages a format is made of: :class:`Quantize`, :class:`Sparsify`, :class:`VQ` and
:class:`Rotate`, each with its validation, storage cost and a one-line label."""

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
from gmse_cli.limits import MAX_SEED
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
    SparsityPattern,
    SpecModel,
    lowercase,
)

__all__ = ["Quantize", "Sparsify", "VQ", "Rotate", "Stage", "is_codebook_file"]

LUT_MAGNITUDE = (1e-30, 1e30)
"""The magnitudes a nonzero lut value may take."""
_MAX_INT_BITS = 16
_MAX_VQ_INDEX_BITS = 16  # at most 2^16 codewords


def _granularity_size(granularity: Granularity, row_length: int) -> float:
    """Elements sharing one scale (a tensor counts as unbounded)."""
    if granularity == "tensor":
        return math.inf
    if granularity == "row":
        return float(row_length)
    return float(granularity)


def _check_divides(what: str, size: int, row_length: int) -> None:
    if row_length % size:
        raise SpecError(f"{what} {size} does not divide the row length {row_length}")


def _group_size(value: Any, stage: str, names: str = "'row', 'tensor'") -> Any:
    """A whole-number group size checked here, so that 0 or 10^30 is named as a group size (not
    as "neither 'row' nor 'tensor'") and no group exceeds the longest row; anything else as is."""
    if type(value) is int and not 1 <= value <= MAX_ROW_LENGTH:
        raise SpecError(f"{stage}: group {value} must be {names} or a whole number from 1 to {MAX_ROW_LENGTH:,}")
    return value


def _binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


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
        description="rms rule: scale = constant * RMS; None = the Gaussian-MSE-optimal one",
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
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        return _group_size(value, "quantize")

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
        if self.resolved_int_style is IntStyle.ASYMMETRIC and grid is GridKind.INT and self.scale in (ScaleRule.RMS, ScaleRule.NONE):
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
        if self.scale_constant is not None and self.scale is not ScaleRule.RMS:
            raise SpecError(f"quantize: scale_constant only applies to scale 'rms', not '{self.scale}'")
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
        size = _granularity_size(self.group, row_length)
        return 0.0 if math.isinf(size) else per_group / size

    def check_row_length(self, row_length: int) -> None:
        if isinstance(self.group, int):
            _check_divides("quantize group size", self.group, row_length)

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


class Sparsify(SpecModel):
    """Pruning: unstructured magnitude, N:M (of entries, or of blocks of K entries), or blocks."""

    kind: Literal["sparsify"] = "sparsify"
    pattern: Annotated[SparsityPattern, CaseInsensitive] = SparsityPattern.MAGNITUDE
    sparsity: float | None = Field(default=None, description="fraction set to zero, in [0, 1)")
    n: int | None = Field(default=None, ge=1, description="n:m: units kept of every m")
    m: int | None = Field(default=None, ge=1)
    block: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROW_LENGTH,
        description="block pattern: block length; n:m: K, the entries of one unit (N:MxK keeps "
        "the N of every M consecutive blocks of K entries with the largest L2 norm; None = 1)",
    )
    granularity: Annotated[Literal["row", "tensor"], CaseInsensitive] = "row"

    @model_validator(mode="before")
    @classmethod
    def _one_entry_units(cls, data: Any) -> Any:
        # N:Mx1 is plain N:M: one spelling, so equal formats compare (and hash) equal.
        if (
            isinstance(data, dict)
            and lowercase(data.get("pattern")) == SparsityPattern.NM
            and data.get("block") == 1
            and not isinstance(data.get("block"), bool)
        ):
            data = {k: v for k, v in data.items() if k != "block"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Sparsify:
        if self.pattern is SparsityPattern.NM:
            if self.n is None or self.m is None:
                raise SpecError("sparsify: pattern 'n:m' needs n and m")
            if self.n > self.m:
                raise SpecError(f"sparsify: N={self.n} > M={self.m}; N:M keeps N of every M")
            if self.m > 64:
                raise SpecError(f"sparsify: M={self.m} is above the supported 64")
            if self.sparsity is not None:
                raise SpecError("sparsify: pattern 'n:m' takes n, m and optionally block (K), not sparsity")
        else:
            if self.sparsity is None:
                raise SpecError(f"sparsify: pattern '{self.pattern}' needs 'sparsity' in [0, 1)")
            if not (0.0 <= self.sparsity < 1.0) or not math.isfinite(self.sparsity):
                raise SpecError(f"sparsify: sparsity={self.sparsity} is outside [0, 1)")
            if self.n is not None or self.m is not None:
                raise SpecError("sparsify: n and m only apply to pattern 'n:m'")
            if self.pattern is SparsityPattern.BLOCK and self.block is None:
                raise SpecError("sparsify: pattern 'block' needs 'block', the block length")
            if self.pattern is SparsityPattern.MAGNITUDE and self.block is not None:
                raise SpecError("sparsify: 'block' only applies to patterns 'block' and 'n:m'")
        return self

    @property
    def density(self) -> float:
        """Fraction of entries kept."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            return self.n / self.m
        assert self.sparsity is not None
        return 1.0 - self.sparsity

    @property
    def unit(self) -> int:
        """N:M: entries per ranked unit, K (1 for plain N:M); block pattern: the block length."""
        return self.block or 1

    @property
    def mask_bits(self) -> float:
        """Bits per parameter to store which entries are kept."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            # one of C(M, N) choices per group of M units of K entries
            return math.log2(math.comb(self.m, self.n)) / (self.m * self.unit)
        entropy = _binary_entropy(self.density)
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            return entropy / self.block
        return entropy

    def occupancy(self, width: int) -> float:
        """Expected fraction of the aligned slices of ``width`` consecutive entries that keep at
        least one entry (a VQ stage codes each such slice), for rows whose pruning ranks
        exchangeable units (i.i.d. entries): the units a slice touches are all pruned with
        probability C(M - t, N) / C(M, N) for t units of one N:M group, s^t for t blocks or
        entries pruned at rate s. Slices inside one unit give the density itself."""
        if self.pattern is SparsityPattern.MAGNITUDE:
            return 1.0 - (1.0 - self.density) ** width
        unit = self.unit
        group = self.m * unit if self.pattern is SparsityPattern.NM else unit
        period = math.lcm(width, group)  # the slices' pattern of units repeats after this
        pruned = 0.0
        for start in range(0, period, width):
            units = range(start // unit, (start + width - 1) // unit + 1)
            if self.pattern is SparsityPattern.BLOCK:
                pruned += (1.0 - self.density) ** len(units)
                continue
            assert self.n is not None and self.m is not None
            per_group: dict[int, int] = {}
            for u in units:
                per_group[u // self.m] = per_group.get(u // self.m, 0) + 1
            pruned += math.prod(math.comb(self.m - t, self.n) / math.comb(self.m, self.n) for t in per_group.values())
        return 1.0 - pruned / (period // width)

    def check_row_length(self, row_length: int) -> None:
        if self.pattern is SparsityPattern.NM:
            assert self.m is not None
            if self.unit == 1:
                _check_divides("N:M group M", self.m, row_length)
            else:
                _check_divides(f"N:MxK group M*K = {self.m}*{self.unit} =", self.m * self.unit, row_length)
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            _check_divides("sparsity block", self.block, row_length)

    def label(self) -> str:
        if self.pattern is SparsityPattern.NM:
            if self.unit > 1:
                return f"{self.n}:{self.m} sparsity of blocks of {self.unit} (by L2 norm)"
            return f"{self.n}:{self.m} sparsity"
        extra = f" blocks of {self.block}" if self.pattern is SparsityPattern.BLOCK else ""
        return f"{self.pattern} sparsity {self.sparsity:g}{extra} per {self.granularity}"


def is_codebook_file(value: Any) -> bool:
    """Whether a VQ stage's ``codebook`` names a .npy file (any case) rather than a codebook kind."""
    return isinstance(value, str) and value.lower().endswith(".npy")


class VQ(SpecModel):
    """Vector quantization: each d-dimensional slice is replaced by its nearest codeword."""

    kind: Literal["vq"] = "vq"
    dim: int = Field(ge=1, le=16)
    bits: float = Field(gt=0, description="bits per coordinate; bits * dim must be an integer")
    codebook: str = Field(
        default="gaussian",
        description="'gaussian' (Lloyd on Gaussian samples), 'e8' (E8 lattice, d=8, 2 bits), or a .npy path",
    )
    scale: Literal["rms"] = "rms"
    group: Literal["row"] | Annotated[int, Field(ge=1)] = "row"
    scale_format: Annotated[ScaleFormat, CaseInsensitive] = ScaleFormat.FP32
    codebook_shared: bool = Field(
        default=True,
        description="a universal codebook costs nothing per tensor; an unshared one is amortized",
    )

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        return _group_size(lowercase(value), "vq", "'row'")

    @field_validator("codebook", mode="before")
    @classmethod
    def _codebook(cls, value: Any) -> Any:
        # Named codebooks are case-insensitive; a file path is kept as written.
        return value if is_codebook_file(value) else lowercase(value)

    @model_validator(mode="after")
    def _check(self) -> VQ:
        index_bits = self.bits * self.dim
        if abs(index_bits - round(index_bits)) > 1e-9:
            raise SpecError(f"vq: bits*dim = {index_bits:g} must be an integer (codebook of 2^(bits*dim))")
        if round(index_bits) > _MAX_VQ_INDEX_BITS:
            raise SpecError(f"vq: 2^{round(index_bits)} codewords is above the supported 2^{_MAX_VQ_INDEX_BITS}")
        if self.codebook == "e8" and (self.dim != 8 or round(index_bits) != 16):
            raise SpecError("vq: the e8 codebook is 8-dimensional with 2 bits per coordinate")
        if self.codebook not in ("gaussian", "e8") and not is_codebook_file(self.codebook):
            raise SpecError(f"vq: codebook '{self.codebook}' is not 'gaussian', 'e8' or a .npy file")
        if self.scale_format is ScaleFormat.DQ8:
            raise SpecError("vq: dq8 scales (bitsandbytes double quantization) apply to quantize stages only")
        return self

    @property
    def codewords(self) -> int:
        return 2 ** round(self.bits * self.dim)

    def scale_bits(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        return SCALE_FORMAT_BITS[self.scale_format] / _granularity_size(self.group, row_length)

    def codebook_bits(self, tensor_elements: int) -> float:
        """Amortized cost of an unshared fp16 codebook over one tensor."""
        if self.codebook_shared:
            return 0.0
        return self.codewords * self.dim * 16 / tensor_elements

    def check_row_length(self, row_length: int) -> None:
        _check_divides("vq dimension", self.dim, row_length)
        if isinstance(self.group, int):
            _check_divides("vq group size", self.group, row_length)
            if self.group % self.dim:
                raise SpecError(f"vq: group size {self.group} is not a multiple of dim {self.dim}")

    def label(self) -> str:
        return f"vq d={self.dim} {self.bits:g} bits/coord ({self.codewords} {self.codebook} codewords)"


class Rotate(SpecModel):
    """Blockwise orthonormal Hadamard transform of each row (undone after compression)."""

    kind: Literal["rotate"] = "rotate"
    transform: Literal["hadamard"] = "hadamard"
    block: int = Field(default=128, ge=2, le=MAX_ROW_LENGTH)
    random_signs: bool = Field(default=False, description="randomized Hadamard (QuIP#-style)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the random signs (as every seed)")

    @field_validator("block")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise SpecError(f"rotate: Hadamard block {value} is not a power of two")
        return value

    def check_row_length(self, row_length: int) -> None:
        _check_divides("Hadamard block", self.block, row_length)

    def label(self) -> str:
        signs = " with random signs" if self.random_signs else ""
        return f"hadamard {self.block}{signs}"


Stage = Annotated[Quantize | Sparsify | VQ | Rotate, Field(discriminator="kind")]
