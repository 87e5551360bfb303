"""The format language: what a compressed numeric format *is*, as validated data.

A :class:`Format` is an ordered tuple of stages applied to a tensor viewed as rows (the input
dimension of a linear layer is the row):

    rotate* -> sparsify? -> (quantize | vq)?

- :class:`Rotate`   -- blockwise Hadamard transform (orthonormal; no effect on GMSE).
- :class:`Sparsify` -- unstructured magnitude, N:M, or block pruning.
- :class:`Quantize` -- a scalar grid (``int``, ``fp``, ``lut``, ``lloyd-max``) with a scale
  rule (``absmax``, ``rms``, ``mse``, ``none``), a granularity (tensor, row, group of g) and a
  storage format for the scales (fp32, bf16, fp16, e8m0, e4m3, int8).
- :class:`VQ`       -- a d-dimensional codebook with 2^(bits*d) entries.

Sparsify then quantize quantizes only the kept values. A :class:`Scheme` pairs a weight format
with an optional activation format; capacities multiply.

Three ways to name a format resolve to the same model (:func:`resolve_format`): a catalog name
(``mxfp4``), a TOML file, or the inline shorthand documented in :data:`SHORTHAND_HELP`.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gmse_cli.errors import SpecError

__all__ = [
    "DEFAULT_ROW_LENGTH",
    "Family",
    "GridKind",
    "IntStyle",
    "FpStyle",
    "ScaleRule",
    "ScaleFormat",
    "SparsityPattern",
    "Quantize",
    "Sparsify",
    "VQ",
    "Rotate",
    "Stage",
    "Format",
    "Scheme",
    "SCALE_FORMAT_BITS",
    "SHORTHAND_HELP",
    "catalog",
    "catalog_names",
    "resolve_format",
    "parse_shorthand",
    "load_format_toml",
    "format_to_toml",
    "fp_max",
]

DEFAULT_ROW_LENGTH = 4096
"""Row length (input dimension) the GMSE engine and bit accounting assume unless told."""

_MAX_INT_BITS = 16
_MAX_VQ_INDEX_BITS = 16  # at most 2^16 codewords


class _Spec(BaseModel):
    # Specs are immutable values: a typo is an error, never silently dropped.
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Family(StrEnum):
    """Compression families: each has its own capacity curve (L, F, C) in a law."""

    QUANTIZATION = "quantization"
    SPARSITY = "sparsity"
    VQ = "vq"
    NONE = "none"  # rotations alone: lossless


class GridKind(StrEnum):
    INT = "int"
    FP = "fp"
    LUT = "lut"
    LLOYD_MAX = "lloyd-max"


class IntStyle(StrEnum):
    """Integer grids.

    - ``midrise``: QuEST's 2^b uniform levels (2k + 1 - 2^b) / (2^b - 1) over [-1, 1], no zero.
    - ``signed``: symmetric integers -(2^(b-1) - 1) ... 2^(b-1) - 1 (zero included).
    - ``asymmetric``: 0 ... 2^b - 1 with a per-group zero point (min/max scaling).
    """

    MIDRISE = "midrise"
    SIGNED = "signed"
    ASYMMETRIC = "asymmetric"


class FpStyle(StrEnum):
    """Which FP codes are finite.

    - ``ieee``: the all-ones exponent is reserved for inf/NaN (fp16, bf16, fp32, e5m2).
    - ``fn``: only the all-ones code is NaN (OCP e4m3: max 448).
    - ``finite``: every code is a finite number (OCP MX e2m1, e2m3, e3m2).
    """

    IEEE = "ieee"
    FN = "fn"
    FINITE = "finite"


class ScaleRule(StrEnum):
    """How a group's scale is chosen.

    - ``absmax``: the largest magnitude maps to the grid's largest value (min/max for
      asymmetric grids; OCP's floor(log2 amax) - emax rule with e8m0 scales).
    - ``rms``: scale = c * RMS(group), c the Gaussian-MSE-optimal constant unless given.
    - ``mse``: search the clipping ratio per group for the least squared error.
    - ``none``: no scale (plain casts such as bf16).
    """

    ABSMAX = "absmax"
    RMS = "rms"
    MSE = "mse"
    NONE = "none"


class ScaleFormat(StrEnum):
    """How scales are stored; e4m3 carries an fp32 per-tensor second-level scale (NVFP4)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    E8M0 = "e8m0"
    E4M3 = "e4m3"
    INT8 = "int8"


SCALE_FORMAT_BITS: dict[ScaleFormat, int] = {
    ScaleFormat.FP32: 32,
    ScaleFormat.BF16: 16,
    ScaleFormat.FP16: 16,
    ScaleFormat.E8M0: 8,
    ScaleFormat.E4M3: 8,
    ScaleFormat.INT8: 8,
}


class SparsityPattern(StrEnum):
    MAGNITUDE = "magnitude"  # unstructured: smallest |x| set to zero
    NM = "n:m"  # keep the N largest of every M consecutive entries
    BLOCK = "block"  # zero whole blocks of consecutive entries with the smallest L2 norm


Granularity = Literal["tensor", "row"] | Annotated[int, Field(ge=1)]


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


def _binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def fp_max(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> float:
    """Largest finite value of an ExMy format (e.g. e2m1 finite: 6, e4m3 fn: 448)."""
    bias = 2 ** (exponent_bits - 1) - 1
    top = 2**exponent_bits - 1  # all-ones exponent field
    if style is FpStyle.IEEE:
        return 2.0 ** (top - 1 - bias) * (2 - 2.0**-mantissa_bits)
    if style is FpStyle.FN:
        # all-ones exponent usable except the all-ones mantissa (NaN)
        return 2.0 ** (top - bias) * (2 - 2.0 ** (1 - mantissa_bits))
    return 2.0 ** (top - bias) * (2 - 2.0**-mantissa_bits)


def _default_fp_style(exponent_bits: int, mantissa_bits: int) -> FpStyle:
    if exponent_bits >= 5:
        return FpStyle.IEEE
    if (exponent_bits, mantissa_bits) == (4, 3):
        return FpStyle.FN
    return FpStyle.FINITE


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


class Quantize(_Spec):
    """A scalar grid applied element by element after dividing by a per-group scale."""

    kind: Literal["quantize"] = "quantize"
    grid: GridKind
    bits: int | None = Field(
        default=None, description="element bits (int, lloyd-max); derived for fp and lut"
    )
    int_style: IntStyle | None = Field(default=None, description="int grids only; default midrise")
    exponent_bits: int | None = Field(default=None, ge=1, le=8)
    mantissa_bits: int | None = Field(default=None, ge=0, le=23)
    fp_style: FpStyle | None = None
    values: tuple[float, ...] | None = Field(
        default=None, description="lut grid values in native units, strictly increasing"
    )
    scale: ScaleRule = ScaleRule.RMS
    scale_constant: float | None = Field(
        default=None,
        gt=0,
        description="rms rule: scale = constant * RMS; None = the Gaussian-MSE-optimal one",
    )
    group: Granularity = "row"
    scale_format: ScaleFormat = ScaleFormat.FP32

    @field_validator("grid", "int_style", "fp_style", "scale", "scale_format", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return _lower(value)

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        value = _lower(value)
        if isinstance(value, str) and value.isdigit():
            return int(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Quantize:
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
            if len(self.values) > 2**_MAX_INT_BITS:
                raise SpecError(f"quantize: a lut holds at most {2**_MAX_INT_BITS} values")
            if any(not math.isfinite(v) for v in self.values):
                raise SpecError("quantize: lut values must be finite")
            if any(b <= a for a, b in zip(self.values, self.values[1:], strict=False)):
                raise SpecError("quantize: lut values must be strictly increasing")
            if max(abs(v) for v in self.values) == 0:
                raise SpecError("quantize: lut values must not all be zero")
        elif self.values is not None:
            raise SpecError(f"quantize: 'values' only applies to grid 'lut', not '{grid}'")
        if self.scale is ScaleRule.NONE and self.group != "row":
            raise SpecError("quantize: scale 'none' takes no group (leave group out)")
        if self.scale_constant is not None and self.scale is not ScaleRule.RMS:
            raise SpecError(f"quantize: scale_constant only applies to scale 'rms', not '{self.scale}'")
        if self.scale is ScaleRule.NONE and grid is not GridKind.FP:
            raise SpecError(f"quantize: scale 'none' is only meaningful for fp grids, not '{grid}'")
        return self

    # -- derived properties ------------------------------------------------------------------

    @property
    def resolved_int_style(self) -> IntStyle:
        return self.int_style or IntStyle.MIDRISE

    @property
    def resolved_fp_style(self) -> FpStyle:
        assert self.exponent_bits is not None and self.mantissa_bits is not None
        return self.fp_style or _default_fp_style(self.exponent_bits, self.mantissa_bits)

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
            return core
        group = self.group if isinstance(self.group, str) else f"g{self.group}"
        return f"{core}, {self.scale} scale per {group} in {self.scale_format}"


class Sparsify(_Spec):
    """Pruning: unstructured magnitude, N:M, or blocks."""

    kind: Literal["sparsify"] = "sparsify"
    pattern: SparsityPattern = SparsityPattern.MAGNITUDE
    sparsity: float | None = Field(default=None, description="fraction set to zero, in [0, 1)")
    n: int | None = Field(default=None, ge=1, description="n:m: entries kept of every m")
    m: int | None = Field(default=None, ge=1)
    block: int | None = Field(default=None, ge=1, description="block pattern: block length")
    granularity: Literal["row", "tensor"] = "row"

    @field_validator("pattern", "granularity", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return _lower(value)

    @model_validator(mode="after")
    def _check(self) -> Sparsify:
        if self.pattern is SparsityPattern.NM:
            if self.n is None or self.m is None:
                raise SpecError("sparsify: pattern 'n:m' needs n and m")
            if self.n > self.m:
                raise SpecError(f"sparsify: N={self.n} > M={self.m}; N:M keeps N of every M")
            if self.m > 64:
                raise SpecError(f"sparsify: M={self.m} is above the supported 64")
            if self.sparsity is not None or self.block is not None:
                raise SpecError("sparsify: pattern 'n:m' takes n and m only")
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
                raise SpecError("sparsify: 'block' only applies to pattern 'block'")
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
    def mask_bits(self) -> float:
        """Bits per parameter to store which entries are kept."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            return math.log2(math.comb(self.m, self.n)) / self.m
        entropy = _binary_entropy(self.density)
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            return entropy / self.block
        return entropy

    def check_row_length(self, row_length: int) -> None:
        if self.pattern is SparsityPattern.NM:
            assert self.m is not None
            _check_divides("N:M group M", self.m, row_length)
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            _check_divides("sparsity block", self.block, row_length)

    def label(self) -> str:
        if self.pattern is SparsityPattern.NM:
            return f"{self.n}:{self.m} sparsity"
        extra = f" blocks of {self.block}" if self.pattern is SparsityPattern.BLOCK else ""
        return f"{self.pattern} sparsity {self.sparsity:g}{extra} per {self.granularity}"


class VQ(_Spec):
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
    scale_format: ScaleFormat = ScaleFormat.FP32
    codebook_shared: bool = Field(
        default=True,
        description="a universal codebook costs nothing per tensor; an unshared one is amortized",
    )

    @field_validator("scale_format", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return _lower(value)

    @field_validator("codebook", mode="before")
    @classmethod
    def _codebook(cls, value: Any) -> Any:
        # Named codebooks are case-insensitive; a file path is kept as written.
        return value if isinstance(value, str) and value.endswith(".npy") else _lower(value)

    @model_validator(mode="after")
    def _check(self) -> VQ:
        index_bits = self.bits * self.dim
        if abs(index_bits - round(index_bits)) > 1e-9:
            raise SpecError(f"vq: bits*dim = {index_bits:g} must be an integer (codebook of 2^(bits*dim))")
        if round(index_bits) > _MAX_VQ_INDEX_BITS:
            raise SpecError(f"vq: 2^{round(index_bits)} codewords is above the supported 2^{_MAX_VQ_INDEX_BITS}")
        if self.codebook == "e8" and (self.dim != 8 or round(index_bits) != 16):
            raise SpecError("vq: the e8 codebook is 8-dimensional with 2 bits per coordinate")
        if self.codebook not in ("gaussian", "e8") and not self.codebook.endswith(".npy"):
            raise SpecError(f"vq: codebook '{self.codebook}' is not 'gaussian', 'e8' or a .npy file")
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


class Rotate(_Spec):
    """Blockwise orthonormal Hadamard transform of each row (undone after compression)."""

    kind: Literal["rotate"] = "rotate"
    transform: Literal["hadamard"] = "hadamard"
    block: int = Field(default=128, ge=2)
    random_signs: bool = Field(default=False, description="randomized Hadamard (QuIP#-style)")
    seed: int = 0

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

_STAGE_ORDER = {"rotate": 0, "sparsify": 1, "quantize": 2, "vq": 2}


class Format(_Spec):
    """A compressed representation: stages applied in order to each row."""

    name: str | None = None
    description: str = ""
    stages: tuple[Stage, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Format:
        order = [_STAGE_ORDER[s.kind] for s in self.stages]
        if order != sorted(order):
            raise SpecError(
                "format: stages must run rotate, then sparsify, then quantize or vq "
                f"(got {' -> '.join(s.kind for s in self.stages)})"
            )
        if sum(s.kind == "sparsify" for s in self.stages) > 1:
            raise SpecError("format: at most one sparsify stage")
        if sum(s.kind in ("quantize", "vq") for s in self.stages) > 1:
            raise SpecError("format: at most one quantize or vq stage")
        return self

    # -- structure ----------------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        return self.name or "+".join(s.label() for s in self.stages)

    @property
    def quantizer(self) -> Quantize | VQ | None:
        return next((s for s in self.stages if isinstance(s, Quantize | VQ)), None)

    @property
    def sparsifier(self) -> Sparsify | None:
        return next((s for s in self.stages if isinstance(s, Sparsify)), None)

    @property
    def rotations(self) -> tuple[Rotate, ...]:
        return tuple(s for s in self.stages if isinstance(s, Rotate))

    @property
    def families(self) -> tuple[Family, ...]:
        """Families of the lossy stages, in order (empty for a lossless format)."""
        out: list[Family] = []
        for stage in self.stages:
            if isinstance(stage, Sparsify):
                out.append(Family.SPARSITY)
            elif isinstance(stage, Quantize):
                out.append(Family.QUANTIZATION)
            elif isinstance(stage, VQ):
                out.append(Family.VQ)
        return tuple(out)

    @property
    def family(self) -> str:
        """One family name, or ``composite`` (e.g. ``sparsity+quantization``)."""
        fams = self.families
        if not fams:
            return Family.NONE.value
        return "+".join(f.value for f in fams)

    def stage_formats(self, *, keep_rotations: bool = False) -> list[tuple[Family, Format]]:
        """Each lossy stage as a standalone format, in order.

        The capacity law factorizes over these: rho(format) = prod rho_family(MSE(stage)).
        Rotations ride along with the quantizer. The sparsity stage drops them by default, for
        GMSE: a rotated i.i.d. Gaussian row is again i.i.d. Gaussian, so the rotation changes
        nothing there, and without it the stage shares its GMSE estimate (and cache entry) with
        the plain sparsity format. ``keep_rotations=True`` keeps them on every stage, for real
        weights (:func:`gmse_cli.realmse.stage_targets`): a rotated format sparsifies *rotated*
        weights, so its sparsity stage alone must see them rotated too.
        """
        rotations = self.rotations
        parts: list[tuple[Family, Format]] = []
        for family, stage in zip(self.families, (s for s in self.stages if s.kind != "rotate"), strict=True):
            prefix = rotations if keep_rotations or family is not Family.SPARSITY else ()
            parts.append(
                (family, Format(name=f"{self.display_name}[{stage.kind}]", stages=(*prefix, stage)))
            )
        return parts

    # -- cost ---------------------------------------------------------------------------------

    def bits_per_param(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Storage bits per parameter: elements + amortized scales + mask/indices + codebooks.

        Scales of ``tensor`` granularity (and NVFP4's second-level fp32 scale) are amortized
        over a whole tensor and counted as zero.
        """
        density = 1.0
        bits = 0.0
        sparsifier = self.sparsifier
        if sparsifier is not None:
            density = sparsifier.density
            bits += sparsifier.mask_bits
        quantizer = self.quantizer
        if quantizer is None:
            return bits + density * 16.0  # kept values stay in bf16
        if isinstance(quantizer, Quantize):
            bits += density * quantizer.element_bits
        else:
            bits += density * quantizer.bits
            bits += quantizer.codebook_bits(row_length * row_length)
        # Scales are per group of *positions*; with sparsity, one per group of kept values.
        bits += quantizer.scale_bits(row_length) * (density if sparsifier is not None else 1.0)
        return bits

    def check_row_length(self, row_length: int) -> None:
        """Raise :class:`SpecError` if a group, block or dimension does not divide the row."""
        if row_length < 1:
            raise SpecError(f"row length {row_length} must be positive")
        for stage in self.stages:
            stage.check_row_length(row_length)

    def describe(self) -> str:
        return self.description or " -> ".join(s.label() for s in self.stages)


class Scheme(_Spec):
    """A weight format with an optional activation format (capacities multiply)."""

    weights: Format
    activations: Format | None = None
    name: str | None = None

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.activations is None:
            return self.weights.display_name
        return f"W:{self.weights.display_name} A:{self.activations.display_name}"


# --------------------------------------------------------------------------------------------
# Catalog, TOML and shorthand
# --------------------------------------------------------------------------------------------


def _validate_format(data: Any, *, source: str) -> Format:
    try:
        return Format.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise SpecError(f"{source}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = err.get("msg", str(exc))
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, SpecError):
        msg = str(ctx_error)
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check its spelling)"
    given = err.get("input")
    shown = f" (got {given!r})" if isinstance(given, str | int | float) and err.get("type") != "extra_forbidden" else ""
    return f"{where}: {msg}{shown}" if where else f"{msg}{shown}"


def load_format_toml(path: str | Path) -> Format:
    """Load one format from a TOML file (the schema of :class:`Format`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read format file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}") from None
    data.setdefault("name", path.stem)
    return _validate_format(data, source=str(path))


def format_to_toml(fmt: Format) -> str:
    """Render a format as TOML that :func:`load_format_toml` reads back to an equal model."""
    data = fmt.model_dump(mode="json", exclude_none=True)
    lines: list[str] = []
    for key in ("name", "description"):
        if key in data and data[key] != "":
            lines.append(f"{key} = {_toml_value(data[key])}")
    for stage in data["stages"]:
        lines.append("")
        lines.append("[[stages]]")
        for key, value in stage.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


@cache
def catalog() -> dict[str, Format]:
    """Every shipped format by name (``formats/*.toml``)."""
    from gmse_cli.paths import catalog_dir

    formats: dict[str, Format] = {}
    for path in sorted(catalog_dir().glob("*.toml")):
        fmt = load_format_toml(path)
        assert fmt.name is not None
        formats[fmt.name] = fmt
    # Listed by family, then cost: the order a person scans the catalog in.
    order = sorted(formats.values(), key=lambda f: (f.family, f.bits_per_param(), f.name))
    return {f.name: f for f in order}


def catalog_names() -> list[str]:
    return list(catalog())


SHORTHAND_HELP = """\
A FORMAT is a catalog name (see `uscl formats`), a path to a .toml file, or a shorthand:

  stage[+stage...]           stages run left to right: rotate, sparsify, then quantize/vq
  stage = base[-modifier...]

Bases:
  <catalog name>             any single-stage catalog entry: int4, fp4, nf4, mxfp4, nvfp4, 2:4 ...
  intB                       QuEST midrise grid, 2^B levels, scale = a_B * RMS (B = 1..16)
  sintB | aintB              signed symmetric / asymmetric (zero point) integers, absmax scale
  eXmY                       floating point with X exponent and Y mantissa bits (fp4 = e2m1)
  lmB                        Lloyd-Max: the Gaussian-MSE-optimal 2^B levels (also lloyd-max-B)
  lut[v1,v2,...]             an explicit list of grid values
  N:M                        keep N of every M
  sparseP                    unstructured magnitude pruning of P percent (also sparse-P)
  blockK-P                   zero P percent of the blocks of K consecutive entries
  vqD-bB                     D-dimensional Gaussian-optimal codebook, B bits per coordinate
  e8p                        8-dimensional E8-lattice codebook, 2 bits per coordinate
  hadK                       Hadamard rotation in blocks of K (had = had128)
  bf16 | fp16 | fp32         plain casts

Modifiers (quantize stages):
  gN | row | tensor          scale granularity: groups of N, per row, per tensor
  absmax | rms | mse         scale rule; rmsC sets scale = C * RMS (e.g. rms2.5)
  sfp32 sbf16 sfp16 se8m0 se4m3 sint8
                             the format scales are stored in

Examples: int4, 2:4+int4, had128+int3, e2m1-g32-absmax-se8m0 (= mxfp4), sint4-g64,
lm3-g128, sparse30+int4, vq4-b2, lut[-1,0,1]-rms1.224"""

_SCALE_FORMAT_TOKENS = {f"s{f.value}": f for f in ScaleFormat}


def _base_stage(token: str) -> Any:
    """The stage a shorthand base token names, or None."""
    cat = catalog()
    if token in cat and len(cat[token].stages) == 1:
        return cat[token].stages[0]
    if m := re.fullmatch(r"int(\d+)", token):
        return Quantize(grid="int", bits=int(m[1]))
    if m := re.fullmatch(r"([sa])int(\d+)", token):
        style = IntStyle.SIGNED if m[1] == "s" else IntStyle.ASYMMETRIC
        return Quantize(grid="int", bits=int(m[2]), int_style=style, scale="absmax")
    if m := re.fullmatch(r"e(\d+)m(\d+)", token):
        return Quantize(grid="fp", exponent_bits=int(m[1]), mantissa_bits=int(m[2]))
    if m := re.fullmatch(r"(?:lm|lloyd-max-)(\d+)", token):
        return Quantize(grid="lloyd-max", bits=int(m[1]))
    if m := re.fullmatch(r"lut\[([^\]]*)\]", token):
        try:
            values = tuple(float(v) for v in m[1].split(",") if v.strip())
        except ValueError:
            raise SpecError(f"'{token}': lut values must be numbers separated by commas") from None
        return Quantize(grid="lut", values=values)
    if m := re.fullmatch(r"(\d+):(\d+)", token):
        return Sparsify(pattern="n:m", n=int(m[1]), m=int(m[2]))
    if m := re.fullmatch(r"sparse-?(\d+(?:\.\d+)?)", token):
        return Sparsify(pattern="magnitude", sparsity=float(m[1]) / 100)
    if m := re.fullmatch(r"block(\d+)-(\d+(?:\.\d+)?)", token):
        return Sparsify(pattern="block", block=int(m[1]), sparsity=float(m[2]) / 100)
    if m := re.fullmatch(r"vq(\d+)-b(\d+(?:\.\d+)?)", token):
        return VQ(dim=int(m[1]), bits=float(m[2]))
    if token == "e8p":
        return VQ(dim=8, bits=2, codebook="e8")
    if m := re.fullmatch(r"had(\d*)", token):
        return Rotate(block=int(m[1]) if m[1] else 128)
    return None


def _apply_modifier(stage: Any, token: str, context: str) -> Any:
    if not isinstance(stage, Quantize | VQ):
        raise SpecError(f"'{context}': modifier '{token}' only applies to quantize or vq stages")
    update: dict[str, Any]
    if m := re.fullmatch(r"g(\d+)", token):
        update = {"group": int(m[1])}
    elif token in ("row", "tensor"):
        update = {"group": token}
    elif token in ("absmax", "mse"):
        update = {"scale": token, "scale_constant": None}
    elif m := re.fullmatch(r"rms(\d+(?:\.\d+)?)?", token):
        update = {"scale": "rms", "scale_constant": float(m[1]) if m[1] else None}
    elif token in _SCALE_FORMAT_TOKENS:
        update = {"scale_format": _SCALE_FORMAT_TOKENS[token]}
    else:
        raise SpecError(
            f"'{context}': unknown modifier '{token}' (expected gN, row, tensor, absmax, rms[C], "
            f"mse, or a scale format {', '.join(_SCALE_FORMAT_TOKENS)})"
        )
    if isinstance(stage, VQ) and "scale" in update:
        raise SpecError(f"'{context}': vq stages use an rms scale; '{token}' does not apply")
    data = stage.model_dump() | update
    try:
        return type(stage).model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise SpecError(f"'{context}': {_first_error(exc)}") from None


def _parse_stage(text: str) -> tuple[Any, ...]:
    """One '+'-separated piece: a (possibly multi-stage) catalog name, or base[-modifier...]."""
    cat = catalog()
    if text in cat:
        return cat[text].stages
    tokens = text.split("-")
    # The longest prefix that names a base wins, so catalog names with dashes (fp6-e2m3,
    # int4-g128, sparse-50) take precedence over reading their pieces as modifiers.
    for cut in range(len(tokens), 0, -1):
        base = _base_stage("-".join(tokens[:cut]))
        if base is not None:
            stage = base
            for modifier in tokens[cut:]:
                stage = _apply_modifier(stage, modifier, text)
            return (stage,)
    suggestion = difflib.get_close_matches(text, list(cat), n=1)
    hint = f"; did you mean '{suggestion[0]}'?" if suggestion else "; see `uscl formats` or `uscl formats --help`"
    raise SpecError(f"unknown format '{text}'{hint}")


def parse_shorthand(text: str) -> Format:
    """Parse the inline grammar (:data:`SHORTHAND_HELP`) into a :class:`Format`."""
    text = text.strip().lower()
    if not text:
        raise SpecError("empty format name")
    if text in catalog():
        return catalog()[text]
    pieces = text.split("+")
    if any(not p for p in pieces):
        raise SpecError(f"'{text}': empty stage between '+' signs")
    stages: list[Any] = []
    try:
        for piece in pieces:
            stages.extend(_parse_stage(piece))
    except ValidationError as exc:
        raise SpecError(f"'{text}': {_first_error(exc)}") from None
    return _validate_format({"name": text, "stages": [s.model_dump() for s in stages]}, source=f"'{text}'")


def resolve_format(text: str | Path | Format) -> Format:
    """A catalog name, a TOML path, or a shorthand -> :class:`Format`."""
    if isinstance(text, Format):
        return text
    raw = str(text).strip()
    if raw.endswith(".toml") or Path(raw).is_file():
        return load_format_toml(raw)
    return parse_shorthand(raw)


def resolve_formats(texts: Iterable[str]) -> list[Format]:
    return [resolve_format(t) for t in texts]
