"""Exact GMSE where a closed form or quadrature exists.

Single-stage scalar grids with an RMS or absmean scale per row or tensor (the infinite-row limit of the
per-row statistics; not e8m0 or e4m3 scales, whose coarse rounding it cannot see) or no scale,
unstructured magnitude sparsity and N:M sparsity (of entries, or of blocks of K entries:
N:MxK). These validate the Monte Carlo path, and ``method="auto"`` uses them wherever they
describe the rows asked for.

A per-row statistic (an RMS scale per row, a magnitude threshold per row) is the infinite-row
limit here, which is the paper's definition. Real rows of ``L`` entries differ from it by
about ``c / L`` relative (``c`` within +-8 for the grids, up to 36 for 10% magnitude pruning;
measured by ``python examples/finite_rows.py``): within 0.1% at the default 4096 for every
catalog grid, but -5% for int4 at 64. So for rows shorter than :data:`EXACT_MIN_ROW_LENGTH`
such formats go to Monte Carlo, which runs the real compressor on rows of that length.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gmse_cli.errors import SpecError, described
from gmse_cli.limits import MEMO_ENTRIES
from gmse_cli.spec import (
    Format,
    FpStyle,
    Quantize,
    Rotate,
    ScaleFormat,
    ScaleRule,
    Sparsify,
    SparsityPattern,
    check_row_length,
)

__all__ = ["EXACT_MIN_ROW_LENGTH", "has_exact", "exact_gmse", "checked_format"]

EXACT_MIN_ROW_LENGTH = 4096
"""The shortest rows for which a per-row statistic's infinite-row limit stands for the real
compressor by default (the default row length)."""


_COARSE_SCALES = (ScaleFormat.E8M0, ScaleFormat.E4M3)
_FLOAT_CAST_SCALES = (ScaleFormat.BF16, ScaleFormat.FP16)
_FLAT_CAST_REL = 1e-4  # the precision the shipped table is computed to


def _lossy_stages(fmt: Format) -> list:
    return [s for s in fmt.stages if not isinstance(s, Rotate)]


@lru_cache(maxsize=MEMO_ENTRIES)  # two quadratures, and has_exact is asked for every format of every command
def _scale_cast_is_flat(stage: Quantize) -> bool:
    """Whether casting the scale's Gaussian limit (the rms constant, sqrt(2/pi) times the absmean
    one) to the scale's float format (bf16, fp16) moves the quadrature by at most
    :data:`_FLAT_CAST_REL` (true at the optimal rms constant)."""
    optimal = stage.scale is ScaleRule.RMS and stage.scale_constant is None
    if stage.scale_format not in _FLOAT_CAST_SCALES or optimal:
        return True
    from gmse_cli.compress.grid_mse import gaussian_mse, gaussian_scale_constant
    from gmse_cli.compress.grids import fp_params, fp_round_reference

    e, m = (8, 7) if stage.scale_format is ScaleFormat.BF16 else (5, 10)
    c = gaussian_scale_constant(stage)
    stored = float(fp_round_reference(np.array([c]), fp_params(e, m, FpStyle.IEEE))[0])
    if stored == 0:  # flushed: every row reads back as zeros, which only Monte Carlo runs
        return False
    at_c = gaussian_mse(stage, c)
    return abs(gaussian_mse(stage, stored) - at_c) <= _FLAT_CAST_REL * at_c


def checked_format(fmt: object, caller: str) -> Format:
    """``fmt`` itself, or one SpecError saying that ``caller`` takes a :class:`Format` and naming
    what came instead (a name is resolved by the entry points, not here)."""
    if not isinstance(fmt, Format):
        raise SpecError(f"{caller} takes a Format (resolve_format gives one), not {described(fmt)}")
    return fmt


def has_exact(fmt: Format, row_length: int | None = None) -> bool:
    """Whether a closed form / quadrature exists for this format's GMSE; given ``row_length``,
    whether it also stands for rows that long (see the module: a per-row statistic's
    infinite-row limit does only from :data:`EXACT_MIN_ROW_LENGTH` entries on)."""
    checked_format(fmt, "has_exact")
    if row_length is not None:
        check_row_length(row_length, "row_length")
    stages = _lossy_stages(fmt)
    if len(stages) != 1:
        return False
    stage = stages[0]
    if isinstance(stage, Quantize):
        if stage.scale is ScaleRule.NONE:
            return True
        # A scale stored in e8m0 (a power of two) or e4m3 (3 mantissa bits) is c * RMS rounded
        # coarsely, a step function of each row's RMS: the quadrature's fixed scale c would
        # ignore the rounding (int4-se8m0: 0.0115 against 0.0172; sint4-rms-se4m3: 0.01289
        # against 0.01293). bf16 and fp16 scales round by <= 0.4%, which moves the MSE by
        # ~1e-6 relative near the optimal constant (the MSE is flat there) but at first order
        # elsewhere: as rows grow the stored scale tends to bf16(c), not c (int4-rms1.51-sbf16
        # on rows of 2^20: 0.04768 measured, limit 0.04771, the quadrature at c 0.04747), so
        # the quadrature stands only where the cast moves it by <= _FLAT_CAST_REL. int8
        # scales are relative to the largest: in the limit every row's equals it, unrounded.
        exists = (
            stage.scale in (ScaleRule.RMS, ScaleRule.ABSMEAN)
            and stage.group in ("row", "tensor")
            and stage.scale_format not in _COARSE_SCALES
            and _scale_cast_is_flat(stage)
        )
        per_row = stage.group == "row"
    elif isinstance(stage, Sparsify):
        exists = stage.pattern in (SparsityPattern.MAGNITUDE, SparsityPattern.NM)
        per_row = stage.pattern is SparsityPattern.MAGNITUDE and stage.granularity == "row"
    else:
        return False
    return exists and (row_length is None or not per_row or row_length >= EXACT_MIN_ROW_LENGTH)


def exact_gmse(fmt: Format) -> float:
    """The GMSE by quadrature / closed form (the infinite-row limit of per-row statistics)."""
    if not has_exact(checked_format(fmt, "exact_gmse")):
        raise SpecError(
            f"format '{fmt.display_name}' has no exact GMSE (only single-stage scalar grids with an "
            "rms, absmean or no scale per row/tensor not stored in e8m0 or e4m3, and magnitude or N:M sparsity); "
            "use --monte-carlo"
        )
    (stage,) = _lossy_stages(fmt)
    if isinstance(stage, Quantize):
        from gmse_cli.compress.grid_mse import gaussian_mse, gaussian_scale_constant

        if stage.scale is ScaleRule.NONE:
            return float(gaussian_mse(stage, 1.0))
        return float(gaussian_mse(stage, gaussian_scale_constant(stage)))
    from gmse_cli.compress.sparsity_gmse import magnitude_gmse, nm_gmse

    if stage.pattern is SparsityPattern.MAGNITUDE:
        return float(magnitude_gmse(stage.sparsity))
    return float(nm_gmse(stage.n, stage.m, stage.unit))
