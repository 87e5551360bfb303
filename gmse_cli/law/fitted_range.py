"""The runs a law was fitted on, and whether a prediction lies beyond them.

A law fitted on 30M-822M models trained on 24-101 tokens per parameter says nothing measured
about a 70B model or a 10-tokens-per-parameter run: the loss formula extrapolates smoothly, and
its intervals (from the constants' uncertainty) do not know that the law's own form is
unverified there. The capacity itself drifts with N and with D/N on published runs (``uscl fit``
reports the drift), so a capacity read far outside the fitted range inherits that drift.

A law file records the range in ``[fitted_range]`` (``uscl fit --out`` writes it from the runs
it fitted); ``uscl rank`` and ``uscl predict`` say in one line when N or D/N lies beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field, model_validator

from gmse_cli.counts import si
from gmse_cli.errors import LawError
from gmse_cli.frozen import Frozen

__all__ = ["FittedRange", "fitted_range_of"]

_EDGE = 1e-9  # relative slack at the ends: a prediction at a fitted run's own N is inside


class FittedRange(Frozen):
    """The smallest and largest N (non-embedding parameters) and D/N (tokens per parameter)
    of the runs a law's constants were fitted on."""

    params: tuple[float, float] = Field(description="[smallest, largest] N of the fitted runs")
    tokens_per_param: tuple[float, float] = Field(description="[smallest, largest] D/N of the fitted runs")
    runs: int = Field(ge=1, description="how many runs")
    provenance: str = Field(min_length=1, description="which runs")

    @model_validator(mode="after")
    def _check(self) -> FittedRange:
        for key in ("params", "tokens_per_param"):
            low, high = getattr(self, key)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise LawError(f"fitted_range.{key} = [{low}, {high}] must be two positive finite numbers, low first")
        return self

    def beyond(self, params: float, tokens: float) -> str | None:
        """Why (N, D) lies beyond the fitted runs, in one clause per axis; None inside."""
        reasons = []
        for what, value, (low, high), show in (
            ("N", params, self.params, si),
            ("D/N", tokens / params, self.tokens_per_param, lambda x: f"{x:.4g}"),
        ):
            if value < low * (1 - _EDGE):
                reasons.append(f"{what} = {show(value)} is {low / value:.3g}x below the smallest fitted ({show(low)})")
            elif value > high * (1 + _EDGE):
                reasons.append(f"{what} = {show(value)} is {value / high:.3g}x above the largest fitted ({show(high)})")
        if not reasons:
            return None
        return "; ".join(reasons)

    def describe(self) -> str:
        """``104 runs, N 30.5M-822M, D/N 24.32-100.9``."""
        (n_low, n_high), (t_low, t_high) = self.params, self.tokens_per_param
        return f"{self.runs} runs, N {si(n_low)}-{si(n_high)}, D/N {t_low:.4g}-{t_high:.4g}"


def fitted_range_of(params: Sequence[float], tokens: Sequence[float], provenance: str) -> FittedRange:
    """The range of runs with these N and D (one entry per run)."""
    if len(params) == 0 or len(params) != len(tokens):
        raise LawError(f"a fitted range needs one N and one D per run (got {len(params)} and {len(tokens)})")
    per_param = [d / n for n, d in zip(params, tokens, strict=True)]
    return FittedRange(
        params=(float(min(params)), float(max(params))),
        tokens_per_param=(float(min(per_param)), float(max(per_param))),
        runs=len(params),
        provenance=provenance,
    )

