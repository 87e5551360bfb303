"""Formats as torchao quantization configs, and back.

The JSON is torchao's own serialization (``torchao.core.config.config_to_dict``, the form
transformers' ``TorchAoConfig`` stores): ``{"_type": CLASS, "_version": N, "_data": {...}}``,
written and read here without torchao installed.

=======================================  ======================================================
uscl quantize stage                      torchao config
=======================================  ======================================================
int b (1 ... 8), int_style full /        IntxWeightOnlyConfig(weight_dtype=int<b>,
asymmetric, absmax, groups g or row      mapping_type SYMMETRIC / ASYMMETRIC, granularity
                                         PerGroup(g) / PerAxis(0), scale_dtype)
fp e4m3 / e5m2, absmax, fp32 scales      Float8WeightOnlyConfig(weight_dtype, PerRow / PerTensor /
per row / tensor / group                 PerGroup)
fp e2m1, e2m3, e3m2, e4m3, e5m2, absmax  MXDynamicActivationMXWeightConfig(block_size, weight_dtype,
e8m0 scales                              scaling_mode FLOOR / CEIL / EVEN / RCEIL); its activations
                                         take the weights' element type
nvfp4 (e2m1, e4m3 scales, groups of 16)  NVFP4WeightOnlyConfig(use_dynamic_per_tensor_scale=True)
=======================================  ======================================================

Imported too: Int8WeightOnlyConfig (int8, full, per row or group). Refused with the reason:
Int4WeightOnlyConfig (its tinygemm and HQQ qparams keep a floating-point zero point), other
int styles, lut and Lloyd-Max grids, the rms and mse rules, e8m0 scales rounded 'nearest',
int8 and dq8 scales, overflow 'inf', sparsity, rotations and vq. An unset ``scale_dtype``
(torchao then keeps the weight's dtype) reads as bf16.
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
    Quantize,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
)
from gmse_cli.spec.format import validate_format

__all__ = ["to_torchao", "from_torchao"]

_TARGET = "torchao"
# element grids by torchao dtype name (fp6 types are plain strings in torchao)
_MX_ELEMENTS = {
    "float4_e2m1fn_x2": (2, 1),
    "fp6_e2m3": (2, 3),
    "fp6_e3m2": (3, 2),
    "float8_e4m3fn": (4, 3),
    "float8_e5m2": (5, 2),
}
_MX_NAMES = {v: k for k, v in _MX_ELEMENTS.items()}
_FLOAT8 = {"float8_e4m3fn": (4, 3), "float8_e5m2": (5, 2)}
# the fp style each element type has there (OCP: e4m3 fn, e5m2 ieee, the rest all finite)
_STYLES = {(2, 1): FpStyle.FINITE, (2, 3): FpStyle.FINITE, (3, 2): FpStyle.FINITE, (4, 3): FpStyle.FN, (5, 2): FpStyle.IEEE}
_SCALE_DTYPES = {ScaleFormat.FP32: "float32", ScaleFormat.BF16: "bfloat16", ScaleFormat.FP16: "float16"}
_SCALE_FORMATS = {v: k for k, v in _SCALE_DTYPES.items()}
_MODES = {
    ScaleRounding.FLOOR: "FLOOR",
    ScaleRounding.CEIL: "CEIL",
    ScaleRounding.EVEN: "EVEN",
    ScaleRounding.RCEIL: "RCEIL",
}


def _dtype(name: str) -> dict[str, Any]:
    return {"_type": "torch.dtype", "_data": name}


def _enum(cls: str, member: str) -> dict[str, Any]:
    return {"_type": cls, "_data": member}


def _config(cls: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"_type": cls, "_version": version, "_data": data}


def _granularity(group: str | int) -> dict[str, Any]:
    if group == "tensor":
        return _config("PerTensor", 1, {})
    if group == "row":
        return _config("PerRow", 1, {"dim": -1})
    return _config("PerGroup", 1, {"group_size": group})


def to_torchao(fmt: Format) -> dict[str, Any]:
    """``fmt`` as a torchao config in ``config_to_dict`` form (module docstring)."""
    q = single_quantizer(fmt, _TARGET)
    if q.scale is not ScaleRule.ABSMAX:
        raise refuse(fmt, _TARGET, f"torchao's configs scale by absmax, not by the '{q.scale}' rule")
    if q.grid is GridKind.INT:
        return _intx(fmt, q)
    if q.grid is not GridKind.FP:
        raise refuse(fmt, _TARGET, f"torchao quantizes to int and float grids, not {q.label()}")
    element = (q.exponent_bits, q.mantissa_bits)
    if _STYLES.get(element) is not q.resolved_fp_style:
        raise refuse(fmt, _TARGET, f"torchao's float elements are OCP's e2m1, e2m3, e3m2, e4m3 (fn) and e5m2, not {q.label()} ({q.resolved_fp_style})")
    if q.scale_format is ScaleFormat.E4M3:
        if element != (2, 1) or q.group != 16:
            raise refuse(fmt, _TARGET, "e4m3 scales over a tensor scale exist there only as NVFP4 (e2m1, groups of 16)")
        return _config("NVFP4WeightOnlyConfig", 1, {"use_dynamic_per_tensor_scale": True})
    if q.scale_format is ScaleFormat.E8M0:
        if not isinstance(q.group, int):
            raise refuse(fmt, _TARGET, "torchao's MX blocks are groups within a row")
        mode = q.scale_rounding or ScaleRounding.FLOOR
        if mode not in _MODES:
            raise refuse(fmt, _TARGET, f"torchao rounds MX scales FLOOR, CEIL, EVEN or RCEIL, not '{mode}'")
        name = _MX_NAMES[element]
        dtype = _dtype(name) if name.startswith("float") else name
        return _config(
            "MXDynamicActivationMXWeightConfig",
            1,
            {
                "block_size": q.group,
                "activation_dtype": dtype,
                "weight_dtype": dtype,
                "kernel_preference": _enum("KernelPreference", "AUTO"),
                "scaling_mode": _enum("ScaleCalculationMode", _MODES[mode]),
            },
        )
    names = {v: k for k, v in _FLOAT8.items()}
    if element in names and q.scale_format is ScaleFormat.FP32:
        return _config(
            "Float8WeightOnlyConfig",
            2,
            {"weight_dtype": _dtype(names[element]), "granularity": _granularity(q.group)},
        )
    raise refuse(fmt, _TARGET, f"torchao has no config for {q.label()}")


def _intx(fmt: Format, q: Quantize) -> dict[str, Any]:
    style = q.resolved_int_style
    if style not in (IntStyle.FULL, IntStyle.ASYMMETRIC) or not (q.bits and q.bits <= 8):
        raise refuse(
            fmt,
            _TARGET,
            f"torchao's int configs hold int1 ... int8 with all 2^b codes, symmetric (int_style "
            f"'full') or with a zero point ('asymmetric'), not int{q.bits} '{style}'",
        )
    if q.group == "tensor":
        raise refuse(fmt, _TARGET, "IntxWeightOnlyConfig scales per group or per row, not per tensor")
    if q.scale_format not in _SCALE_DTYPES:
        raise refuse(fmt, _TARGET, f"its {q.scale_format} scales have no torchao scale_dtype")
    granularity = (
        _config("PerAxis", 1, {"axis": 0}) if q.group == "row" else _config("PerGroup", 1, {"group_size": q.group})
    )
    return _config(
        "IntxWeightOnlyConfig",
        2,
        {
            "weight_dtype": _dtype(f"int{q.bits}"),
            "granularity": granularity,
            "mapping_type": _enum("MappingType", "SYMMETRIC" if style is IntStyle.FULL else "ASYMMETRIC"),
            "scale_dtype": _dtype(_SCALE_DTYPES[q.scale_format]),
            "intx_packing_format": _enum("IntxPackingFormat", "UNPACKED_TO_INT8"),
            "intx_choose_qparams_algorithm": _enum("IntxChooseQParamsAlgorithm", "AFFINE"),
        },
    )


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def _value(v: Any) -> Any:
    """A serialized torch.dtype or enum as its name; anything else as it is."""
    if isinstance(v, dict) and "_data" in v and not isinstance(v["_data"], dict):
        return v["_data"]
    return v


def _group(granularity: Any, where: str) -> str | int:
    if granularity is None:
        return "row"
    granularity = mapping(granularity, "granularity", where)
    kind, data = granularity.get("_type"), mapping(granularity.get("_data"), "granularity", where)
    if kind == "PerGroup":
        if "group_size" not in data:
            raise SpecError(f"{where}: granularity PerGroup has no group_size")
        return whole(data["group_size"], "group_size", where)
    if kind == "PerTensor":
        return "tensor"
    # a weight is (out, in): PerRow reduces over dim -1 (= 1), PerAxis keeps one scale per
    # index of axis 0; the other dims scale per column, which uscl has no granularity for
    if (kind == "PerRow" and data.get("dim", -1) in (-1, 1)) or (kind == "PerAxis" and data.get("axis", 0) == 0):
        return "row"
    raise SpecError(f"{where}: granularity {kind} {data} has no uscl counterpart")


def _int_group(kind: str, body: dict[str, Any], where: str) -> str | int:
    """Int8WeightOnlyConfig's groups: its ``group_size`` when set (torchao's version 1 reads
    it, not the granularity), else the ``granularity`` (absent: per row)."""
    size = body.get("group_size")
    if kind == "Int8WeightOnlyConfig" and size is not None:
        return whole(size, "group_size", where)
    return _group(body.get("granularity"), where)


def _scale_format(dtype: Any, where: str) -> ScaleFormat:
    name = _value(dtype)
    if name is None:
        return ScaleFormat.BF16  # the weight's dtype, usually bf16
    if not isinstance(name, str) or name not in _SCALE_FORMATS:
        raise SpecError(f"{where}: scale_dtype {name} has no uscl scale format")
    return _SCALE_FORMATS[name]


def from_torchao(data: dict[str, Any], *, name: str | None = None) -> Format:
    """The uscl format of a torchao config dict (module docstring); a :class:`SpecError`
    names what uscl cannot express."""
    if isinstance(data.get("quant_type"), str):  # transformers' TorchAoConfig before torchao configs
        raise SpecError(
            f"{_TARGET}: quant_type '{data['quant_type']}' (a string, transformers' older TorchAoConfig) "
            "is not read; uscl reads torchao config objects ({'_type': ..., '_data': ...})"
        )
    if "quant_type" in data and isinstance(data["quant_type"], dict):  # transformers' TorchAoConfig
        inner = data["quant_type"]
        data = inner.get("default", inner) if "_type" not in inner else inner
    data = mapping(data, "config", _TARGET)
    kind = data.get("_type")
    where = f"{_TARGET} {kind}"
    body = mapping(data.get("_data"), "_data", where)
    stage: dict[str, Any] = {"kind": "quantize", "scale": "absmax"}
    if kind in ("IntxWeightOnlyConfig", "Int8WeightOnlyConfig"):
        dtype = _value(body.get("weight_dtype", {"_data": "int8"})) if kind == "IntxWeightOnlyConfig" else "int8"
        mapping_type = _value(body.get("mapping_type", "SYMMETRIC"))
        algorithm = _value(body.get("intx_choose_qparams_algorithm", "AFFINE"))
        if mapping_type not in ("SYMMETRIC", "ASYMMETRIC") or algorithm != "AFFINE":
            raise SpecError(f"{where}: mapping {mapping_type} with {algorithm} qparams has no uscl int grid")
        if not (isinstance(dtype, str) and dtype.startswith("int") and dtype[3:].isdigit()):
            raise SpecError(f"{where}: weight_dtype {dtype!r} is not a signed int type uscl knows (int1 ... int8)")
        stage.update(
            grid="int",
            bits=int(dtype[3:]),
            int_style="full" if mapping_type == "SYMMETRIC" else "asymmetric",
            group=_int_group(kind, body, where),
            scale_format=_scale_format(body.get("scale_dtype"), where),
        )
    elif kind == "Float8WeightOnlyConfig":
        element = _value(body.get("weight_dtype", "float8_e4m3fn"))
        if not isinstance(element, str) or element not in _FLOAT8:
            raise SpecError(f"{where}: weight_dtype {element} is not a float8 uscl knows")
        e, m = _FLOAT8[element]
        stage.update(grid="fp", exponent_bits=e, mantissa_bits=m, group=_group(body.get("granularity"), where))
    elif kind == "MXDynamicActivationMXWeightConfig":
        element = _value(body.get("weight_dtype", "float8_e4m3fn"))
        if not isinstance(element, str) or element not in _MX_ELEMENTS:
            raise SpecError(f"{where}: weight_dtype {element} is not an MX element uscl knows")
        mode = str(_value(body.get("scaling_mode", "FLOOR"))).lower()
        if mode not in (r.value for r in _MODES):
            raise SpecError(f"{where}: scaling_mode {mode.upper()!r} is not one of torchao's FLOOR, CEIL, EVEN or RCEIL")
        e, m = _MX_ELEMENTS[element]
        stage.update(
            grid="fp", exponent_bits=e, mantissa_bits=m, group=whole(body.get("block_size", 32), "block_size", where),
            scale_format="e8m0", scale_rounding=None if mode == "floor" else mode,  # floor: the default
        )
    elif kind == "NVFP4WeightOnlyConfig":
        if not flag(body.get("use_dynamic_per_tensor_scale", True), "use_dynamic_per_tensor_scale", where):
            raise SpecError(f"{where}: e4m3 block scales without the fp32 tensor scale have no uscl counterpart")
        stage.update(grid="fp", exponent_bits=2, mantissa_bits=1, group=16, scale_format="e4m3")
    elif kind == "Int4WeightOnlyConfig":
        raise SpecError(
            f"{where}: its qparams (tinygemm, HQQ) keep a floating-point zero point, which uscl's "
            "int grids (integer zero points) cannot express; IntxWeightOnlyConfig(weight_dtype="
            "torch.int4) is the integer-zero-point equivalent"
        )
    else:
        raise SpecError(f"{_TARGET} config '{kind}': uscl reads IntxWeightOnlyConfig, Int8WeightOnlyConfig, "
                        "Float8WeightOnlyConfig, MXDynamicActivationMXWeightConfig and NVFP4WeightOnlyConfig")
    return validate_format({"name": name, "stages": [stage]}, source=where)
