"""Where a format's casts leave their range on given data: scales beyond a bf16, fp16 or e8m0
scale's largest value (saturated, or inf/NaN with ``overflow='inf'``) or flushed to zero, and
elements of a plain cast beyond its largest value.

On Gaussian samples this never happens; on real weights it can (an fp16 scale of a group
whose amax is below 7 * 2^-25 is zero, and the whole group reads back as zeros), so
``uscl mse`` reports it (:func:`gmse_cli.realmse.measure_layers`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gmse_cli.compress.grids import fp_round_reference
from gmse_cli.compress.group_stats import (
    STAT_ABSMEAN,
    STAT_AMAX,
    STAT_HI,
    STAT_LO,
    STAT_RMS,
    group_stat,
)
from gmse_cli.compress.scalar.plans import (
    ABSMEAN,
    ASYM,
    BF16,
    BF16_P,
    E8M0,
    FP16,
    FP16_P,
    NONE,
    RMS,
    plan,
)
from gmse_cli.compress.scalar.scales import e8m0_exponent_reference
from gmse_cli.spec import Quantize, ScaleFormat, ScaleRule

__all__ = ["ScaleRange", "scale_range", "can_leave_range"]

_CHECKED = (ScaleFormat.BF16, ScaleFormat.FP16, ScaleFormat.E8M0)


class ScaleRange(NamedTuple):
    """Counts over the data checked: scales (one per group) or, for a plain cast, elements."""

    checked: int  # groups (or elements of a plain cast)
    over: int  # beyond the largest value: saturated (or inf / NaN with overflow 'inf')
    flushed: int  # a nonzero scale stored as zero: the group reads back as zeros

    def __add__(self, other: tuple) -> ScaleRange:  # type: ignore[override]
        return ScaleRange(*(a + b for a, b in zip(self, other, strict=True)))


def can_leave_range(stage: Quantize) -> bool:
    """Whether :func:`scale_range` can find anything: bf16, fp16 and e8m0 scales, and plain
    casts narrower than float32."""
    if stage.scale is ScaleRule.NONE:
        return (stage.exponent_bits, stage.mantissa_bits) != (8, 23)
    return stage.scale_format in _CHECKED


def scale_range(stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None) -> ScaleRange:
    """How many scales (elements, for a plain cast) of ``stage`` on float32 ``x`` (rows, cols)
    leave their format's range; ``mask``: the kept entries. The mse rule is checked with its
    absmax scale (the largest it can choose)."""
    p = plan(stage, x.shape[1])
    if not can_leave_range(stage) or x.size == 0:
        return ScaleRange(0, 0, 0)
    if p.rule == NONE:
        kept = x if mask is None else x[mask]
        cast = fp_round_reference(kept.astype(np.float64), p.fp, np.inf)
        return ScaleRange(int(kept.size), int(np.count_nonzero(np.isinf(cast))), 0)
    flat = x.reshape(1, -1) if p.tensor else x
    keep = None if mask is None else mask.reshape(flat.shape)
    group = flat.shape[1] if p.tensor else p.group
    if p.rule in (RMS, ABSMEAN):  # amax: read only by the absmax e8m0 roundings
        raw = p.constant * group_stat(flat, keep, group, STAT_RMS if p.rule == RMS else STAT_ABSMEAN)
        amax = raw
    elif p.grid == ASYM:
        lo, hi = group_stat(flat, keep, group, STAT_LO), group_stat(flat, keep, group, STAT_HI)
        amax = np.maximum(-lo, hi)
        raw = (hi - lo) / (p.n - 1)
    else:
        amax = group_stat(flat, keep, group, STAT_AMAX)
        raw = amax / p.gmax
    positive = raw > 0
    if p.sfmt == E8M0:
        k = e8m0_exponent_reference(p, np.where(positive, raw, 1.0), np.where(positive, amax, 1.0))
        over = positive & (k > 127)
        flushed = np.zeros_like(positive)  # e8m0 clamps at 2^-127 instead
    else:
        params = {BF16: BF16_P, FP16: FP16_P}[p.sfmt]
        stored = fp_round_reference(raw, params, np.inf)
        over = np.isinf(stored)
        flushed = positive & (stored == 0)
    return ScaleRange(int(raw.size), int(np.count_nonzero(over)), int(np.count_nonzero(flushed)))
