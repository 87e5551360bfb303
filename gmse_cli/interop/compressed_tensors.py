"""Formats as compressed-tensors quantization configs (llm-compressor, vLLM), and back.

A format exports to a ``quantization_config`` with one config group whose ``weights`` are
compressed-tensors' ``QuantizationArgs`` (plain JSON; compressed-tensors itself is not needed):

=====================================  =============================================================
uscl quantize stage                    compressed-tensors weights args
=====================================  =============================================================
grid int, int_style full               type int, symmetric: scale amax / ((2^b - 1) / 2), -2^(b-1)
                                       ... 2^(b-1) - 1 (the W4A16 presets)
grid int, int_style asymmetric         type int, symmetric false: (max - min) / (2^b - 1) and an
                                       integer zero point, min <= 0 <= max (W4A16_ASYM)
fp e4m3 (fn), e2m1, e2m3 (finite)      type float, num_bits 8, 4, 6
group g / row / tensor                 strategy group (group_size g) / channel / tensor
e4m3 scales, groups of 16, e2m1        strategy tensor_group (NVFP4: an fp32 global scale)
e8m0 scales, groups of 32, rounding    scale_dtype uint8 (MXFP4, MXFP6: compressed-tensors rounds
``even``, e2m1 or e2m3                 amax to the element's mantissa bits, torchao's EVEN)
fp32 / bf16 / fp16 scales              scale_dtype float32 / bfloat16 / float16
scale absmax                           the min-max observer (the default)
=====================================  =============================================================

Everything else has no compressed-tensors counterpart and is refused with the reason: other
int styles (uscl's 'signed' -7 ... 7 grid, QuEST's midrise), lut and Lloyd-Max grids, the rms
and mse scale rules (compressed-tensors' mse observer minimizes |error|^2.4 over its own
shrink grid), int8 and dq8 scales, e8m0 scales rounded other than ``even`` (and ``even`` on
e4m3, which compressed-tensors rounds with e2m1's one mantissa bit), overflow 'inf',
sparsity, rotations and vq stages. Importing reads the weights of the one config group; an
unset ``scale_dtype`` (compressed-tensors then keeps the model's dtype) reads as bf16, and on
tensor_group (NVFP4, always fp8 e4m3 scales) as e4m3. A config that also quantizes
activations or the kv cache, or stores the weights 2:4 sparse (``marlin-24``, a
``sparsity_config``), is refused: its weights' format alone would misstate it. ``ignore``
(layers left unquantized) does not change the format.
"""

from __future__ import annotations

from typing import Any

from gmse_cli.errors import SpecError
from gmse_cli.interop.common import flag, mapping, refuse, single_quantizer, whole
from gmse_cli.spec import (
    Format,
    FpStyle,
    GridKind,
    IntStyle,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
)
from gmse_cli.spec.format import validate_format

__all__ = ["to_compressed_tensors", "from_compressed_tensors"]

_TARGET = "compressed-tensors"
_FLOAT_BITS = {(4, 3, FpStyle.FN): 8, (2, 1, FpStyle.FINITE): 4, (2, 3, FpStyle.FINITE): 6}
_FLOAT_GRID = {bits: (e, m) for (e, m, _), bits in _FLOAT_BITS.items()}
_SCALE_DTYPES = {
    ScaleFormat.FP32: "torch.float32",
    ScaleFormat.BF16: "torch.bfloat16",
    ScaleFormat.FP16: "torch.float16",
}
_SCALE_FORMATS = {v: k for k, v in _SCALE_DTYPES.items()}
_MX_DTYPE, _NVFP4_DTYPE = "torch.uint8", "torch.float8_e4m3fn"


def to_compressed_tensors(fmt: Format) -> dict[str, Any]:
    """``fmt`` as a compressed-tensors ``quantization_config`` (module docstring)."""
    q = single_quantizer(fmt, _TARGET)
    if q.scale is not ScaleRule.ABSMAX:
        raise refuse(fmt, _TARGET, f"its scale rule '{q.scale}' is not compressed-tensors' min-max observer (absmax)")
    args: dict[str, Any] = {}
    if q.grid is GridKind.INT and q.resolved_int_style in (IntStyle.FULL, IntStyle.ASYMMETRIC):
        args.update(num_bits=q.bits, type="int", symmetric=q.resolved_int_style is IntStyle.FULL)
    elif q.grid is GridKind.FP and (q.exponent_bits, q.mantissa_bits, q.resolved_fp_style) in _FLOAT_BITS:
        bits = _FLOAT_BITS[(q.exponent_bits, q.mantissa_bits, q.resolved_fp_style)]
        args.update(num_bits=bits, type="float", symmetric=True)
    elif q.grid is GridKind.INT:
        raise refuse(
            fmt,
            _TARGET,
            f"its int_style '{q.resolved_int_style}' has no counterpart: compressed-tensors' "
            "symmetric ints use all 2^b codes (int_style 'full', as w4a16) and its asymmetric "
            "ones a zero point (int_style 'asymmetric')",
        )
    else:
        raise refuse(fmt, _TARGET, f"compressed-tensors quantizes to int, e4m3, e2m1 and e2m3 grids, not {q.label()}")
    group = q.group
    fmt_scale = q.scale_format
    if fmt_scale is ScaleFormat.E4M3:
        if (args["type"], args["num_bits"], group) != ("float", 4, 16):
            raise refuse(fmt, _TARGET, "e4m3 scales over a tensor scale exist there only as NVFP4 (e2m1, groups of 16)")
        args.update(strategy="tensor_group", group_size=16, scale_dtype=_NVFP4_DTYPE)
    elif fmt_scale is ScaleFormat.E8M0:
        if not (args["type"] == "float" and args["num_bits"] in (4, 6) and group == 32):
            raise refuse(fmt, _TARGET, "e8m0 scales exist there only as MXFP4 and MXFP6 (e2m1 or e2m3, groups of 32)")
        if q.scale_rounding is not ScaleRounding.EVEN:
            raise refuse(
                fmt,
                _TARGET,
                f"compressed-tensors rounds MX scales 'even' (amax to the element's mantissa bits), "
                f"not '{q.scale_rounding or ScaleRounding.FLOOR}' (use {fmt.display_name}-even)",
            )
        args.update(strategy="group", group_size=32, scale_dtype=_MX_DTYPE)
    elif fmt_scale in _SCALE_DTYPES:
        if group == "tensor":
            args["strategy"] = "tensor"
        elif group == "row":
            args["strategy"] = "channel"
        else:
            args.update(strategy="group", group_size=group)
        args["scale_dtype"] = _SCALE_DTYPES[fmt_scale]
    else:
        raise refuse(fmt, _TARGET, f"its {fmt_scale} scales have no counterpart there")
    args.update(dynamic=False, observer="minmax")
    return {
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": args}},
    }


# compressed formats that store the weights 2:4 sparse (sparsity is no part of a quantizer)
_SPARSE_FORMATS = ("marlin-24", "sparse-24-bitmask", "sparse-bitmask")


def _refuse_beyond_weights(data: dict[str, Any], where: str) -> None:
    """A :class:`SpecError` for what a config quantizes besides its weights' one quantizer
    (activations, the kv cache, 2:4 sparsity): importing it as weights alone would be wrong."""
    for key in ("input_activations", "output_activations", "kv_cache_scheme"):
        if data.get(key):
            raise SpecError(
                f"{where}: {key} is set, and a uscl format quantizes the weights alone"
            )
    if str(data.get("format")).lower() in _SPARSE_FORMATS:
        raise SpecError(f"{where}: format '{data['format']}' stores the weights 2:4 sparse, which import cannot express")
    sparsity = data.get("sparsity_config")
    if sparsity:
        sparsity = mapping(sparsity, "sparsity_config", where)
        structure = str(sparsity.get("sparsity_structure", "unstructured"))
        if str(sparsity.get("format", "dense")).lower() != "dense" or structure.lower() != "unstructured" or sparsity.get("global_sparsity"):
            raise SpecError(
                f"{where}: sparsity_config ({structure}, format '{sparsity.get('format')}') prunes the "
                "weights, which import cannot express"
            )


def _weights_args(data: dict[str, Any]) -> dict[str, Any]:
    """The weights' QuantizationArgs within a config.json, quantization_config, scheme or args."""
    if "quantization_config" in data:
        return _weights_args(mapping(data["quantization_config"], "quantization_config", f"{_TARGET} config"))
    if "config_groups" in data:
        _refuse_beyond_weights(data, f"{_TARGET} config")
        groups = mapping(data["config_groups"], "config_groups", f"{_TARGET} config")
        weighted = [(k, g) for k, g in groups.items() if isinstance(g, dict) and g.get("weights")]
        if len(weighted) != 1:
            names = ", ".join(k for k, _ in weighted)
            raise SpecError(f"{_TARGET} config: expected one config group with weights, found {len(weighted)} ({names})")
        return _weights_args(weighted[0][1])
    if "weights" in data:
        _refuse_beyond_weights(data, f"{_TARGET} scheme")
        if not isinstance(data["weights"], dict):
            raise SpecError(f"{_TARGET} scheme: it quantizes no weights")
        return data["weights"]
    if "num_bits" in data:
        return data
    raise SpecError(f"not a {_TARGET} config: no quantization_config, config_groups, weights or num_bits")


def from_compressed_tensors(data: dict[str, Any], *, name: str | None = None) -> Format:
    """The uscl format of a compressed-tensors config's weights (module docstring); a
    :class:`SpecError` names what uscl cannot express."""
    args = _weights_args(data)
    fields = f"{_TARGET} weights"
    bits = whole(args.get("num_bits", 8), "num_bits", fields)
    kind = str(args.get("type", "int")).lower()
    symmetric = flag(args.get("symmetric", True), "symmetric", fields)
    group_size = args.get("group_size")
    if group_size is not None:
        group_size = whole(group_size, "group_size", fields)
    strategy = args.get("strategy") or ("tensor" if group_size is None else "channel" if group_size == -1 else "group")
    strategy = str(strategy).lower()
    scale_dtype = args.get("scale_dtype")
    if scale_dtype is not None and not isinstance(scale_dtype, str):
        raise SpecError(f"{fields}: scale_dtype {scale_dtype!r} is not a torch dtype name")
    observer = args.get("observer") or "minmax"
    where = f"{_TARGET} weights ({kind}{bits}, {strategy})"
    if str(observer).lower() not in ("minmax", "memoryless_minmax", "static_minmax"):
        raise SpecError(f"{where}: observer '{observer}' has no uscl scale rule (uscl reads min-max as absmax)")
    stage: dict[str, Any] = {"kind": "quantize", "scale": "absmax"}
    if kind == "int":
        stage.update(grid="int", bits=bits, int_style="full" if symmetric else "asymmetric")
    elif kind == "float" and bits in _FLOAT_GRID and symmetric:
        e, m = _FLOAT_GRID[bits]
        stage.update(grid="fp", exponent_bits=e, mantissa_bits=m)
    else:
        raise SpecError(f"{where}: uscl has no {'asymmetric ' if not symmetric else ''}{kind}{bits} grid of compressed-tensors")
    if strategy == "tensor_group":
        # compressed-tensors stores tensor_group scales as fp8 e4m3 whether or not the config
        # says so (scale_dtype is absent from configs written before it existed)
        if (kind, bits, group_size) != ("float", 4, 16) or scale_dtype not in (None, _NVFP4_DTYPE):
            raise SpecError(f"{where}: uscl reads tensor_group only as NVFP4 (float4, groups of 16, fp8 e4m3 scales)")
        stage.update(group=16, scale_format="e4m3")
    elif scale_dtype == _MX_DTYPE:
        if not (kind == "float" and bits in (4, 6) and group_size == 32):
            raise SpecError(
                f"{where}: uint8 (MX) scales of {kind}{bits} groups of {group_size} round amax "
                "with e2m1's one mantissa bit, which no uscl e8m0 rounding expresses"
            )
        stage.update(group=32, scale_format="e8m0", scale_rounding="even")
    else:
        if scale_dtype is not None and scale_dtype not in _SCALE_FORMATS:
            raise SpecError(f"{where}: scale_dtype {scale_dtype} has no uscl scale format")
        stage["scale_format"] = _SCALE_FORMATS.get(scale_dtype, ScaleFormat.BF16)
        if strategy == "group":
            if group_size is None:
                raise SpecError(f"{where}: strategy 'group' needs a group_size")
            stage["group"] = group_size
        elif strategy in ("channel", "tensor"):
            stage["group"] = "row" if strategy == "channel" else "tensor"
        else:
            raise SpecError(f"{where}: strategy '{strategy}' has no uscl granularity (groups within a row, row, tensor)")
    return validate_format({"name": name, "stages": [stage]}, source=_TARGET)
