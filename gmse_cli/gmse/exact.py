"""Exact GMSE where a closed form or quadrature exists.

Single-stage scalar grids with an RMS scale per row or tensor (the infinite-row limit of the
per-row statistics) or no scale, unstructured magnitude sparsity and N:M sparsity (of entries,
or of blocks of K entries: N:MxK). These validate the Monte Carlo path, and ``method="auto"``
uses them wherever they apply.
"""

from __future__ import annotations

from gmse_cli.errors import SpecError
from gmse_cli.spec import Format, Quantize, Rotate, ScaleRule, Sparsify, SparsityPattern

__all__ = ["has_exact", "exact_gmse"]


def _lossy_stages(fmt: Format) -> list:
    return [s for s in fmt.stages if not isinstance(s, Rotate)]


def has_exact(fmt: Format) -> bool:
    """Whether a closed form / quadrature exists for this format's GMSE."""
    stages = _lossy_stages(fmt)
    if len(stages) != 1:
        return False
    stage = stages[0]
    if isinstance(stage, Quantize):
        if stage.scale is ScaleRule.NONE:
            return True
        return stage.scale is ScaleRule.RMS and stage.group in ("row", "tensor")
    if isinstance(stage, Sparsify):
        return stage.pattern in (SparsityPattern.MAGNITUDE, SparsityPattern.NM)
    return False


def exact_gmse(fmt: Format) -> float:
    """The GMSE by quadrature / closed form (the infinite-row limit of per-row statistics)."""
    if not has_exact(fmt):
        raise SpecError(
            f"format '{fmt.display_name}' has no exact GMSE (only single-stage scalar grids with an "
            "rms or no scale per row/tensor, and magnitude or N:M sparsity); use --monte-carlo"
        )
    (stage,) = _lossy_stages(fmt)
    if isinstance(stage, Quantize):
        from gmse_cli.compress.grids import gaussian_mse, optimal_rms_constant

        if stage.scale is ScaleRule.NONE:
            return float(gaussian_mse(stage, 1.0))
        constant = stage.scale_constant or optimal_rms_constant(stage)
        return float(gaussian_mse(stage, constant))
    from gmse_cli.compress.sparsity_gmse import magnitude_gmse, nm_gmse

    if stage.pattern is SparsityPattern.MAGNITUDE:
        return float(magnitude_gmse(stage.sparsity))
    return float(nm_gmse(stage.n, stage.m, stage.unit))
