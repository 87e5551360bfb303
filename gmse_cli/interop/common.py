"""What every config target shares: a format reduced to its one scalar quantizer."""

from __future__ import annotations

from gmse_cli.errors import SpecError
from gmse_cli.spec import Format, Overflow, Quantize, ScaleRule

__all__ = ["single_quantizer", "refuse"]


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
