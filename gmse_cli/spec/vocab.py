"""The format language's vocabulary: closed sets of names, the spec base model, shared constants.

Every closed vocabulary is a string enum read case-insensitively (:data:`CaseInsensitive`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from gmse_cli.errors import SpecError, bad_value
from gmse_cli.frozen import FrozenInput
from gmse_cli.limits import is_whole

__all__ = [
    "check_fp_widths",
    "DEFAULT_ROW_LENGTH", "SpecModel", "CaseInsensitive", "lowercase", "Family", "GridKind",
    "IntStyle", "FpStyle", "ScaleRule", "ScaleStats", "ScaleFormat", "SCALE_FORMAT_BITS", "TENSOR_LEVEL_SCALE_FORMATS", "ScaleRounding",
    "Overflow", "LutRounding", "SparsityPattern", "Granularity", "fp_max", "DQ_BLOCK", "MAX_ROW_LENGTH",
    "check_row_length",
]

DEFAULT_ROW_LENGTH = 4096
"""Row length (input dimension) the GMSE engine and bit accounting assume unless told."""

MAX_ROW_LENGTH = 1 << 20
"""The longest row (input dimension) any command accepts: 1,048,576, four times the widest
linear layer of today's largest models; a sample bank holds a few such rows, never gigabytes."""


def check_row_length(row_length: object, what: str = "row_length") -> int:
    """``row_length`` as an int, or one :class:`SpecError` naming it as the parameter ``what``
    (a whole number from 1 to :data:`MAX_ROW_LENGTH`: no bool, float or text)."""
    if not (is_whole(row_length) and 1 <= row_length <= MAX_ROW_LENGTH):
        raise bad_value(SpecError, what, row_length, f"must be a whole number from 1 to {MAX_ROW_LENGTH:,}")
    return int(row_length)


class SpecModel(FrozenInput):
    """Base of every spec model: an immutable value; a typo is an error, never silently dropped,
    and nan or inf (a scale constant, a sparsity, a LUT value) is never meaningful."""


def lowercase(value: Any) -> Any:
    """A string stripped and lowercased; anything else as it is."""
    return value.strip().lower() if isinstance(value, str) else value


CaseInsensitive = BeforeValidator(lowercase)
"""Field annotation for a closed vocabulary: ``Annotated[GridKind, CaseInsensitive]`` reads 'INT' as 'int'."""


class Family(StrEnum):
    """Compression families: each has its own capacity curve (L, F, C) in a law."""

    QUANTIZATION = "quantization"
    SPARSITY = "sparsity"
    VQ = "vq"
    NONE = "none"  # rotations alone: lossless

    @classmethod
    def _missing_(cls, value: object) -> Family:
        # a SpecError (still a ValueError) naming the value, so the API's one error type holds
        raise SpecError(f"family {value!r} is not one of: {', '.join(f.value for f in cls)}")


class GridKind(StrEnum):
    """Kinds of scalar grid: uniform integer, floating point, or a lookup table of values."""

    INT = "int"
    FP = "fp"
    LUT = "lut"
    LLOYD_MAX = "lloyd-max"


class IntStyle(StrEnum):
    """Integer grids.

    - ``midrise``: QuEST's 2^b uniform levels (2k + 1 - 2^b) / (2^b - 1) over [-1, 1], no zero.
    - ``signed``: symmetric integers -(2^(b-1) - 1) ... 2^(b-1) - 1 (zero included).
    - ``asymmetric``: 0 ... 2^b - 1 with a per-group zero point (min/max scaling), as GPTQ,
      AWQ and compressed-tensors store it.
    - ``full``: every two's-complement code -2^(b-1) ... 2^(b-1) - 1, absmax mapped to
      (2^b - 1) / 2 (int4: scale = amax / 7.5, levels -8 ... 7): the symmetric W4A16 convention
      of compressed-tensors, GPTQ (sym=True) and torchao (MappingType.SYMMETRIC).
    """

    MIDRISE = "midrise"
    SIGNED = "signed"
    ASYMMETRIC = "asymmetric"
    FULL = "full"


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
    - ``absmean``: scale = c * mean |x| over the group, c = 1 unless given (BitNet b1.58's
      rule: ternary codes clip(round(x / mean|x|), -1, 1); other grids round-clip alike).
    - ``mse``: search the clipping ratio per group for the least squared error.
    - ``none``: no scale (plain casts such as bf16).
    """

    ABSMAX = "absmax"
    RMS = "rms"
    MSE = "mse"
    NONE = "none"
    ABSMEAN = "absmean"


class ScaleStats(StrEnum):
    """Which entries of a group the scale's statistics (RMS, max, min; the mse rule's search)
    are taken over when a sparsify stage runs before the quantizer.

    - ``kept``: the entries the mask keeps (the default): the scale fits what is stored.
    - ``all``: every entry of the group before pruning, as QuEST's FourEight quantizer does
      (its int4 scale is a_4 * RMS of the whole row; the pruned entries are zeroed after
      rounding). Without a sparsify stage the two are the same.
    """

    KEPT = "kept"
    ALL = "all"


class ScaleFormat(StrEnum):
    """How scales are stored.

    - ``fp32``, ``bf16``, ``fp16``: a float per group;
    - ``e8m0``: a power of two per group (OCP MX), rounded by :class:`ScaleRounding`;
    - ``e4m3`` and ``int8``: per group, relative to an fp32 per-tensor second-level scale
      (e4m3 as in NVFP4);
    - ``dq8``: bitsandbytes' double quantization (QLoRA): the group's absmax minus the tensor's
      mean absmax, in bitsandbytes' signed 8-bit dynamic code, blocks of :data:`DQ_BLOCK`
      consecutive scales sharing an fp32 absmax (8 + 32/256 bits a group).
    """

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    E8M0 = "e8m0"
    E4M3 = "e4m3"
    INT8 = "int8"
    DQ8 = "dq8"


DQ_BLOCK = 256
"""Scales per block of bitsandbytes' double quantization (its second-level blocksize)."""

SCALE_FORMAT_BITS: dict[ScaleFormat, float] = {
    ScaleFormat.FP32: 32,
    ScaleFormat.BF16: 16,
    ScaleFormat.FP16: 16,
    ScaleFormat.E8M0: 8,
    ScaleFormat.E4M3: 8,
    ScaleFormat.INT8: 8,
    ScaleFormat.DQ8: 8 + 32 / DQ_BLOCK,
}
"""Bits per group's scale, amortized second levels of blocks included (per-tensor ones are not)."""

TENSOR_LEVEL_SCALE_FORMATS = frozenset({ScaleFormat.E4M3, ScaleFormat.INT8, ScaleFormat.DQ8})
"""Scale formats with a per-tensor second level (a group's scale depends on the whole tensor)."""


class ScaleRounding(StrEnum):
    """How an e8m0 scale (a power of two 2^k) is chosen; torchao's ScaleCalculationMode names.

    With amax the group's largest magnitude and emax = floor(log2 grid_max) (e2m1: 2, e4m3: 8):

    - ``floor``: k = floor(log2 amax) - emax (OCP MX v1.0; the top of the group may saturate);
    - ``ceil``: k = ceil(log2 amax) - emax;
    - ``even``: k = floor(log2 amax') - emax, amax' = amax rounded half-up to the element's
      mantissa bits (fp grids only; compressed-tensors' MXFP4 rule);
    - ``rceil``: k = ceil(log2 s), s = float32(raw scale), e.g. amax / grid_max (NVIDIA's
      cvt.rp.satfinite.ue8m0 conversion: nothing saturates);
    - ``nearest``: k = log2 of the raw scale rounded to nearest.

    Unset, the rule's default: ``floor`` for absmax, ``nearest`` for rms, absmean and mse, and the
    smallest power of two >= the raw scale for asymmetric absmax grids.
    """

    FLOOR = "floor"
    CEIL = "ceil"
    EVEN = "even"
    RCEIL = "rceil"
    NEAREST = "nearest"


class Overflow(StrEnum):
    """What a cast does with a value beyond the format's largest finite value.

    - ``saturate``: it becomes the largest finite value (of its sign);
    - ``inf``: it becomes inf as an IEEE cast does (NaN in formats without inf: e4m3 fn, e8m0).

    For a plain cast (scale ``none``) it is the element cast; for a scaled format, the cast of
    the scales (bf16, fp16, e8m0).
    """

    SATURATE = "saturate"
    INF = "inf"


class LutRounding(StrEnum):
    """How a lut grid picks a level.

    - ``nearest``: the nearest level to x / scale (exact), a value at a midpoint takes the upper;
    - ``bitsandbytes``: bitsandbytes' NF4/FP4 arithmetic: v = float32(x * float32(1 / scale)),
      the nearest level by float32 midpoints, a value at a midpoint takes the lower level.
    """

    NEAREST = "nearest"
    BITSANDBYTES = "bitsandbytes"


class SparsityPattern(StrEnum):
    """Which entries a sparsity stage zeroes."""

    MAGNITUDE = "magnitude"  # unstructured: smallest |x| set to zero
    NM = "n:m"  # keep the N largest of every M consecutive entries (or blocks of K entries, by L2 norm)
    BLOCK = "block"  # zero whole blocks of consecutive entries with the smallest L2 norm


Granularity = Literal["tensor", "row"] | Annotated[int, Field(ge=1)]


def check_fp_widths(exponent_bits: Any, mantissa_bits: Any, what: str) -> None:
    """One SpecError naming ``what`` unless 1 <= exponent_bits <= 8 and 0 <= mantissa_bits <= 23
    (whole numbers): wider formats do not fit float32, and 2^(2^E) of a huge E never ends."""
    if not (is_whole(exponent_bits) and is_whole(mantissa_bits)
            and 1 <= exponent_bits <= 8 and 0 <= mantissa_bits <= 23):
        shown = [text if len(text := str(v)) <= 12 else text[:12] + "..." for v in (exponent_bits, mantissa_bits)]
        raise SpecError(f"{what} e{shown[0]}m{shown[1]}: need 1 <= exponent_bits <= 8 and "
                        "0 <= mantissa_bits <= 23 (wider formats do not fit float32)")


def fp_max(exponent_bits: int, mantissa_bits: int, style: FpStyle) -> float:
    """Largest finite value of an ExMy format (e.g. e2m1 finite: 6, e4m3 fn: 448)."""
    check_fp_widths(exponent_bits, mantissa_bits, "fp_max:")
    if style not in set(FpStyle):
        raise SpecError(f"fp_max: fp_style {style!r} is none of {', '.join(FpStyle)}")
    style = FpStyle(style)
    bias = 2 ** (exponent_bits - 1) - 1
    top = 2**exponent_bits - 1  # all-ones exponent field
    if style is FpStyle.IEEE:
        return 2.0 ** (top - 1 - bias) * (2 - 2.0**-mantissa_bits)
    if style is FpStyle.FN:
        # all-ones exponent usable except the all-ones mantissa (NaN)
        return 2.0 ** (top - bias) * (2 - 2.0 ** (1 - mantissa_bits))
    return 2.0 ** (top - bias) * (2 - 2.0**-mantissa_bits)

