"""Scalar quantization: scale rules, scale storage formats and rounding onto a grid.

``quantize(stage, x, mask)`` applies one :class:`~gmse_cli.spec.Quantize` stage to a float32
tensor of shape (rows, row_length) and returns the dequantized tensor. Groups are ``g``
consecutive entries of a row, a whole row, or the whole tensor. ``mask`` (True = kept) comes
from a preceding sparsify stage: statistics use only kept entries; dropped entries output 0.
With ``scale_stats = "all"`` (QuEST's FourEight) ``x`` is the row before pruning: the group is
quantized whole, statistics over every entry, and the dropped entries are zeroed after.

Per group, all in float64 (so the numba kernel and its numpy twin agree bit for bit):

1. statistics over kept entries: count, the sum of squares (rms) or of magnitudes (absmean)
   (summed in order), amax, and
   lo = min(0, min x), hi = max(0, max x) (zero is kept inside an asymmetric range, as GPTQ
   does, so the zero point fits in the element bits that :meth:`Quantize.scale_bits` counts);
2. the raw scale, by rule:

   - ``absmax``: amax / grid_max; asymmetric ints (hi - lo) / (2^b - 1);
   - ``rms``: c * RMS, c = ``scale_constant`` or
     :func:`~gmse_cli.compress.grid_mse.optimal_rms_constant`;
   - ``absmean``: c * mean |x| (BitNet b1.58's rule), c = ``scale_constant`` or 1;
   - ``mse``: r times the absmax scale, r the clipping ratio with the least squared error
     among 1.00, 0.99, ..., 0.20, refined to 0.001 around the best (first best wins);
   - ``none``: no scale, a plain cast onto an fp grid;

3. the stored (effective) scale, by ``scale_format``:

   - fp32: the raw scale rounded to float32; bf16 / fp16: cast (RNE, saturating);
   - e8m0: a power of two 2^k, k in [-127, 127], k by ``scale_rounding``
     (:class:`~gmse_cli.spec.ScaleRounding`): floor (OCP MX's floor(log2 amax) - emax_elem,
     the default for symmetric absmax), ceil, even, rceil, nearest (log2 of the raw scale
     rounded to nearest, the default for rms and mse); the smallest power of two >= the raw
     scale by default for asymmetric absmax (nothing clipped);
   - e4m3 (NVFP4's two levels): s_t = float32(max raw scale over the tensor / 448), stored =
     e4m3(raw / s_t), effective = stored * s_t;
   - int8: s_t = float32(max raw scale / 255), effective = clip(rint(raw / s_t), 1, 255) * s_t;
   - dq8 (bitsandbytes' double quantization, :mod:`.double_quant`): elements are rounded
     with the float32 raw scale and dequantized with its double-quantized value;

   Beyond its largest value a bf16, fp16 or e8m0 scale saturates, or with ``overflow='inf'``
   becomes inf (NaN for e8m0), and the group's outputs inf or NaN.

   A zero effective scale (all-zero or fully masked group, or underflow) outputs zeros
   (every rule's raw scale of an all-zero group is 0: no division by zero).
   The ``mse`` search measures each candidate with its stored scale for the per-group
   formats (fp32, bf16, fp16, e8m0) and with the float32 raw scale for the two-level ones
   (e4m3, int8), whose stored value depends on every group's choice. The kernel skips the
   candidates that cannot win, which changes no result: a (scale, zero point) met before,
   and an error sum once it reaches the best so far;

4. rounding of v = x / scale, then x_hat = float32(level * scale):

   - fp: RNE onto the ExMy grid, saturating (:func:`~gmse_cli.compress.fpcast.fp_cast`);
   - int midrise: the nearest of the levels +-(2j + 1) / (2^b - 1), clamped; ties (measure
     zero) away from zero;
   - int signed: clip(rint(v), -(2^(b-1) - 1), 2^(b-1) - 1) (ties to even);
   - int full: clip(rint(v), -2^(b-1), 2^(b-1) - 1) (ties to even);
   - int asymmetric: q = clip(rint(v) + z, 0, 2^b - 1), level q - z, with the zero point
     z = clip(rint(-lo / scale), 0, 2^b - 1) (lo scaled by r for ``mse``);
   - lut and lloyd-max: the nearest level; a value exactly at a midpoint takes the upper one;
     with ``lut_rounding='bitsandbytes'``: v = float32(x * float32(1 / scale)), the level by
     float32 midpoints, a value at a midpoint taking the lower one;
   - plain casts (scale ``none``): RNE onto the ExMy grid, saturating or (``overflow='inf'``)
     overflowing to inf as an IEEE cast.

Inputs are assumed finite (not checked on the hot path). The sign of an output zero is not
part of the contract.

The package, one module per concept (each numba kernel ``k_*`` beside its numpy twin):

- ``plans``: a stage reduced to the kernels' numbers (:func:`plan`, :class:`Plan`, the codes);
- ``scales``: statistics, raw scales by rule, stored scales by format, zero points;
- ``double_quant``: the dq8 scale format (bitsandbytes' double quantization);
- ``mse_rule``: the mse rule's clipping-ratio search;
- ``rounding``: rounding onto each grid, row writers, squared errors;
- ``quantizer``: :func:`quantize`, :func:`quantize_reference`, :func:`top_raw_scale`;
- ``saturation``: :func:`scale_range`, scales (or plain-cast elements) out of their range.
"""

from gmse_cli.compress.scalar.double_quant import dq_scales, dq_scales_reference, dynamic_code
from gmse_cli.compress.scalar.mse_rule import (
    MSE_COARSE,
    MSE_COARSE_STEP,
    MSE_FINE,
    MSE_FINE_STEP,
    MSE_MIN_RATIO,
)
from gmse_cli.compress.scalar.plans import (
    ABSMAX,
    ABSMEAN,
    ASYM,
    BF16,
    BF16_P,
    DQ8,
    E4M3,
    E4M3_MAX,
    E4M3_P,
    E8_CEIL,
    E8_CEIL_RAW,
    E8_EVEN,
    E8_FLOOR,
    E8_NEAREST,
    E8_RCEIL,
    E8M0,
    E8M0_EXP,
    FP,
    FP16,
    FP16_P,
    FP32,
    FULL,
    GLOBAL_FORMATS,
    INT8,
    INT8_MAX,
    MIDRISE,
    MSE,
    NONE,
    RMS,
    SIGNED,
    TABLE,
    TABLE32,
    TENSOR_FORMATS,
    Plan,
    even_increment,
    plan,
    scale_args,
)
from gmse_cli.compress.scalar.quantizer import quantize, quantize_reference, top_raw_scale
from gmse_cli.compress.scalar.saturation import ScaleRange, can_leave_range, scale_range
from gmse_cli.compress.scalar.scales import SQRT_HALF

ALGORITHM_VERSION = 2
"""Bumped whenever what any module of this package computes changes (a scale rule or format,
the mse search, rounding); part of the key of every stored GMSE (:mod:`gmse_cli.gmse.stored`),
so none goes stale. 2: bitsandbytes LUT rounding, IEEE overflow of plain casts, e8m0
scale rounding modes, dq8 scales."""

__all__ = [
    "ALGORITHM_VERSION",
    "quantize",
    "quantize_reference",
    "top_raw_scale",
    "ScaleRange",
    "scale_range",
    "can_leave_range",
    "dynamic_code",
    "dq_scales",
    "dq_scales_reference",
    # A stage as the kernels see it, for the torch compressors that mirror them.
    "Plan",
    "plan",
    "scale_args",
    "even_increment",
    "MIDRISE",
    "SIGNED",
    "ASYM",
    "FULL",
    "FP",
    "TABLE",
    "TABLE32",
    "NONE",
    "ABSMAX",
    "ABSMEAN",
    "RMS",
    "MSE",
    "FP32",
    "BF16",
    "FP16",
    "E8M0",
    "E4M3",
    "INT8",
    "DQ8",
    "GLOBAL_FORMATS",
    "TENSOR_FORMATS",
    "E8_FLOOR",
    "E8_CEIL",
    "E8_EVEN",
    "E8_RCEIL",
    "E8_NEAREST",
    "E8_CEIL_RAW",
    "BF16_P",
    "FP16_P",
    "E4M3_P",
    "E4M3_MAX",
    "INT8_MAX",
    "E8M0_EXP",
    "SQRT_HALF",
    "MSE_COARSE",
    "MSE_COARSE_STEP",
    "MSE_FINE",
    "MSE_FINE_STEP",
    "MSE_MIN_RATIO",
]
