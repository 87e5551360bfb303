"""fp8 checkpoints read as the weights they stand for: each fp8 code times its scale.

Many models are published only in fp8 (DeepSeek-V3 and R1, Qwen3's and Llama's FP8 releases),
with no bf16 original to measure. Their linear weights are fp8 codes (``F8_E4M3``) beside a
float scale tensor, and the weight the model computes with is code x scale, in three layouts:

- ``quant_method: fp8`` (DeepSeek, transformers' fine-grained fp8): ``X.weight_scale_inv``, one
  scale per block of ``weight_block_size`` (128 x 128) of the (out, in) weight, multiplied, as
  DeepSeek's ``weight_dequant`` does despite the name;
- ``quant_method: compressed-tensors`` with fp8 weights (llm-compressor's FP8 and FP8_DYNAMIC,
  ``format: float-quantized``): ``X.weight_scale``, per tensor, per output channel (out, 1),
  or per block of the config group's ``block_structure``;
- ``quant_method: fbgemm_fp8`` (Meta's Llama 3.1 405B FP8): ``X.weight_scale`` per output channel.

An fp8 weight without its scale, or with a scale of a shape none of them gives, is refused
naming both. Anything else (a zero point, codes of another dtype beside the fp8 ones, a layout
not listed, no ``config.json``) leaves the checkpoint to :mod:`gmse_cli.realmse.prequantized`,
which refuses it. The measured MSE of a format is its error against the dequantized weights,
which differ from the unpublished bf16 original by fp8's own rounding (about 2^-4 relative per
value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from gmse_cli.errors import DataError
from gmse_cli.realmse.prequantized import PLAIN_DTYPES
from gmse_cli.realmse.tensorfile import TensorInfo

__all__ = ["Fp8Weights", "fp8_weights"]

_FP8 = frozenset({"F8_E4M3", "F8_E5M2"})
_FLOAT = PLAIN_DTYPES - {"I64"}
_SCALE_SUFFIX = {"fp8": "_scale_inv", "compressed-tensors": "_scale", "fbgemm_fp8": "_scale"}


class Fp8Weights(NamedTuple):
    """The tensors of an fp8 checkpoint with each fp8 weight bound to its scale, and one line
    saying how they are read."""

    tensors: list[TensorInfo]
    description: str


def _block(quantization: dict, method: str) -> tuple[int, int] | None:
    """The (rows, columns) of one block scale the config names, if any."""
    found = quantization.get("weight_block_size")
    if method == "compressed-tensors":
        groups = quantization.get("config_groups")
        for group in groups.values() if isinstance(groups, dict) else ():
            weights = group.get("weights") if isinstance(group, dict) else None
            if isinstance(weights, dict) and weights.get("block_structure") is not None:
                found = weights["block_structure"]
    if (isinstance(found, list) and len(found) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in found)):
        return found[0], found[1]
    return None


def _scale_block(weight: TensorInfo, scale: TensorInfo, block: tuple[int, int] | None) -> tuple[int, int]:
    """The part of ``weight`` that one value of ``scale`` covers, from the scale's shape."""
    rows, cols = weight.shape
    if scale.params == 1:
        return rows, cols
    if scale.shape in ((rows, 1), (rows,)):
        return 1, cols
    if block is not None and scale.shape == (math.ceil(rows / block[0]), math.ceil(cols / block[1])):
        return block
    size = f"{block[0]}x{block[1]} " if block else ""
    raise DataError(f"fp8 weight '{weight.name}' {list(weight.shape)} has scale '{scale.name}' of shape "
                    f"{list(scale.shape)}, which is not one per tensor, per row or per {size}block; "
                    f"uscl cannot tell which scale covers which weights")


def _kind(weight: TensorInfo) -> str:
    assert weight.scale_block is not None
    rows, cols = weight.scale_block
    if (rows, cols) == weight.shape:
        return "per tensor"
    return "per row" if rows == 1 and cols == weight.shape[1] else f"per {rows}x{cols} block"


def fp8_weights(config: dict | None, tensors: Sequence[TensorInfo]) -> Fp8Weights | None:
    """The checkpoint's tensors with its fp8 weights bound to their scales, when ``config``'s
    ``quantization_config`` is one of the fp8 layouts above and every tensor that is not a plain
    float is an fp8 code or a scale; None otherwise (the checkpoint is then judged by
    :func:`~gmse_cli.realmse.prequantized.quantization_evidence`). Raises :class:`DataError`
    for an fp8 weight without its scale, or with a scale of a shape no layout gives."""
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if not isinstance(method, str) or method not in _SCALE_SUFFIX:
        return None
    by_name = {t.name: t for t in tensors}
    fp8 = [t for t in tensors if t.dtype in _FP8]
    if not fp8 or any(t.dtype not in PLAIN_DTYPES | _FP8 for t in tensors) or any(n.endswith("_zero_point") for n in by_name):
        return None
    suffix, block = _SCALE_SUFFIX[method], _block(quantization, method)
    bound: dict[str, TensorInfo] = {}
    for weight in fp8:
        scale = by_name.get(weight.name + suffix)
        if scale is None or scale.dtype not in _FLOAT:
            found = "is not" if scale is None else f"holds {scale.dtype}"
            raise DataError(f"fp8 weight '{weight.name}' has no float scale: '{weight.name + suffix}' {found} in the "
                            f"checkpoint (quant_method '{method}' keeps one beside each fp8 weight); the "
                            f"checkpoint is incomplete or in a layout uscl does not read")
        if len(weight.shape) != 2 or weight.transposed or weight.kernel:
            raise DataError(f"fp8 weight '{weight.name}' has shape {list(weight.shape)}: uscl reads fp8 weights "
                            f"as (out, in) matrices only")
        bound[weight.name] = weight.model_copy(update={"scale": scale,
                                                       "scale_block": _scale_block(weight, scale, block)})
    kinds = ", ".join(sorted({_kind(w) for w in bound.values()}))
    codes = "/".join(sorted({w.dtype.removeprefix("F8_").lower() for w in bound.values()}))
    matrices = "matrix" if len(bound) == 1 else "matrices"
    description = (f"{len(bound):,} fp8 ({codes}) weight {matrices} read as code x scale ('weight{suffix}' "
                   f"{kinds}; quant_method '{method}'): each format is measured against those dequantized weights")
    return Fp8Weights([bound.get(t.name, t) for t in tensors], description)
