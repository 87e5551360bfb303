"""Whether a checkpoint is already quantized: its tensors are packed codes and scales, not the
floating-point weights a format would quantize.

GPTQ and AWQ store int32-packed ``qweight``/``qzeros`` beside fp16 ``scales``;
compressed-tensors ``weight_packed`` (or fp8 ``weight`` beside ``weight_scale``); fp8 checkpoints
in DeepSeek's layout ``weight_scale_inv``; bitsandbytes a uint8 ``weight`` beside
``weight.absmax`` / ``weight.quant_state.*`` (4-bit) or ``SCB`` (8-bit); gpt-oss's MXFP4 experts
``*_blocks``/``*_scales``. Every one of them also writes ``quantization_config`` into the Hugging
Face ``config.json``. Measuring such a checkpoint would measure only the layers it left in
floating point (or fp8 codes without their scales) and report them as the model. (fp8 weights
beside their scales, in a layout :mod:`gmse_cli.realmse.fp8_weights` knows, are read as the
weights they stand for before this is asked.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gmse_cli.realmse.tensorfile import TensorInfo

__all__ = ["PLAIN_DTYPES", "quantization_evidence"]

# The tensor names quantizers write beside (or instead of) a layer's weight.
_PACKED = re.compile(
    r"(\.qweight|\.qzeros|\.weight_packed|\.weight_scale|\.weight_scale_inv|\.weight_zero_point|\.weight_global_scale"
    r"|\.weight\.absmax|\.weight\.quant_map|\.weight\.quant_state\.\w+|\.SCB|_blocks)$"
)

PLAIN_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "I64"})
"""The dtypes of a checkpoint that holds no quantizer's codes (I64: buffers such as position_ids)."""


def quantization_evidence(config: dict | None, tensors: Sequence[TensorInfo]) -> str | None:
    """What shows a checkpoint is already quantized (``config.json``'s ``quantization_config``,
    or a tensor only a quantizer writes), in words; None when nothing does, and always for a
    checkpoint of plain floats (:data:`PLAIN_DTYPES`)."""
    # Every quantizer stores its codes in some other dtype (int32-packed, uint8, int8, fp8): a
    # checkpoint of plain floats has none, whatever it says. A bf16 conversion of an fp8 model
    # often keeps DeepSeek's config, a sparse-only compressed-tensors model stored dense has
    # one too, and a float layer may own a tensor named like a quantizer's (a learned scale).
    if all(info.dtype in PLAIN_DTYPES for info in tensors):
        return None
    if isinstance(config, dict):
        for key in ("quantization_config", "compression_config"):
            qc = config.get(key)
            if isinstance(qc, dict):
                method = qc.get("quant_method")
                named = f" (quant_method '{method}')" if isinstance(method, str) else ""
                return f"config.json has a {key}{named}"
    for info in tensors:
        if _PACKED.search(info.name):
            return f"it holds tensor '{info.name}' ({info.dtype} {list(info.shape)}), which quantizers write"
    return None
