"""Formats as the configs people deploy with: compressed-tensors quantization configs
(llm-compressor, vLLM) and torchao configs, exported and imported as JSON.

:func:`export_format` writes a format as a config and :func:`import_config` reads one back;
each raises a one-line :class:`~gmse_cli.errors.SpecError` naming what the other side cannot
express. Neither needs the peer library installed. One module per target:
:mod:`.compressed_tensors`, :mod:`.torchao`.
"""

from __future__ import annotations

from typing import Any, Literal

from gmse_cli.errors import SpecError
from gmse_cli.interop.compressed_tensors import from_compressed_tensors, to_compressed_tensors
from gmse_cli.interop.torchao import from_torchao, to_torchao
from gmse_cli.spec import Format

__all__ = [
    "TARGETS",
    "Target",
    "export_format",
    "import_config",
    "config_target",
    "to_compressed_tensors",
    "from_compressed_tensors",
    "to_torchao",
    "from_torchao",
]

Target = Literal["compressed-tensors", "torchao"]
TARGETS: tuple[str, ...] = ("compressed-tensors", "torchao")


def export_format(fmt: Format, to: str) -> dict[str, Any]:
    """``fmt`` as a config of ``to`` (compressed-tensors or torchao), a JSON-ready dict."""
    if to == "compressed-tensors":
        return to_compressed_tensors(fmt)
    if to == "torchao":
        return to_torchao(fmt)
    raise SpecError(f"unknown config target '{to}' (expected {' or '.join(TARGETS)})")


def config_target(data: Any) -> Target:
    """Which library a config dict is for: torchao's carry a ``_type`` (or transformers'
    TorchAoConfig a ``quant_type``), everything else is read as compressed-tensors."""
    if not isinstance(data, dict):
        raise SpecError("a quantization config is a JSON object")
    inner = data.get("quantization_config", data)
    if isinstance(inner, dict) and ("_type" in inner or inner.get("quant_method") == "torchao"):
        return "torchao"
    return "compressed-tensors"


def import_config(data: Any, *, name: str | None = None) -> Format:
    """The uscl format a compressed-tensors or torchao config quantizes weights to."""
    if config_target(data) == "torchao":
        inner = data.get("quantization_config", data)
        return from_torchao(inner, name=name)
    return from_compressed_tensors(data, name=name)
