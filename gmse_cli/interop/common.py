"""What every config target shares: a format reduced to its one scalar quantizer."""

from __future__ import annotations

from typing import Any

from gmse_cli.errors import SpecError
from gmse_cli.spec import Format, Overflow, Quantize, ScaleRule

__all__ = ["single_quantizer", "refuse", "whole", "flag", "mapping"]


def refuse(fmt: Format, target: str, why: str) -> SpecError:
    """The one-line error for a format ``target`` configs cannot express, and why."""
    return SpecError(f"cannot export '{fmt.display_name}' to {target}: {why}")


def single_quantizer(fmt: Format, target: str) -> Quantize:
    """The format's one scalar quantize stage, or a :class:`SpecError` naming what ``target``
    configs cannot express (rotations, sparsity, vq, several stages)."""
    kinds = [s.kind for s in fmt.stages]
    if kinds != ["quantize"]:
        extra = sorted(set(kinds) - {"quantize"}) or ["several quantize stages"]
        raise refuse(fmt, target, f"its config holds one scalar quantizer and no {', '.join(extra)} stage")
    stage = fmt.stages[0]
    assert isinstance(stage, Quantize)
    if stage.scale is ScaleRule.NONE:
        raise refuse(fmt, target, "a plain cast (scale 'none') is no quantization config")
    if stage.overflow is Overflow.INF:
        raise refuse(fmt, target, "overflow 'inf' has no counterpart (its casts saturate)")
    return stage


# Imported configs are JSON written by hand or by other tools: a field of the wrong type is
# named, never truncated (4.7 bits is not 4) or read by truthiness ("false" is not true).


def whole(value: Any, what: str, where: str) -> int:
    """``value`` as an integer: a JSON integer, or a float with no fractional part."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: {what} {value!r} is not a whole number")
    return value


def flag(value: Any, what: str, where: str) -> bool:
    """``value`` as a JSON boolean."""
    if not isinstance(value, bool):
        raise SpecError(f"{where}: {what} {value!r} is not true or false")
    return value


def mapping(value: Any, what: str, where: str) -> dict[str, Any]:
    """``value`` as a JSON object (``None``: an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: {what} is not a JSON object: {str(value)[:80]}")
    return value
