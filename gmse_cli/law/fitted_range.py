"""The runs a law was fitted on, and whether a prediction lies beyond them.

A law fitted on 30M-822M models trained on 24-101 tokens per parameter says nothing measured
about a 70B model or a 10-tokens-per-parameter run: the loss formula extrapolates smoothly, and
its intervals (from the constants' uncertainty) do not know that the law's own form is
unverified there. The capacity itself drifts with N and with D/N on published runs (``uscl fit``
reports the drift), so a capacity read far outside the fitted range inherits that drift.

The same holds for a capacity curve read at a GMSE beyond the stages it was fitted on, and
most of all for a family no fitted run had (the shipped law's VQ curve is the quantization
curve, copied: no VQ run backs it). A GMSE above the largest fitted one is flagged; one below
the smallest only where the curve still rises there by over 1% (:data:`FLAT`): the shipped
quantization curve is flat below bf16's GMSE (0.9986 L there, L at 0), but a curve fitted at
one sparse GMSE (QuEST's 0.208, capacity 0.57) reads 0.95 at 10% sparsity unbacked.

A law file records the range in ``[fitted_range]`` (``uscl fit --out`` writes it from the runs
it fitted); ``uscl rank`` and ``uscl predict`` say in one line when N or D/N lies beyond it,
and when a stage's capacity is read beyond its family's fitted GMSEs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from pydantic import Field, model_validator

from gmse_cli.counts import si
from gmse_cli.errors import LawError
from gmse_cli.frozen import Frozen
from gmse_cli.spec import Family

__all__ = ["FLAT", "FittedRange", "fitted_range_of"]

_EDGE = 1e-9  # relative slack at the ends: a prediction at a fitted run's own N is inside
FLAT = 0.01  # below the smallest fitted GMSE, a capacity within 1% of the curve's there is read as backed


def _times(ratio: float) -> str:
    """'1.22e+03x'; a ratio past the largest float (a count near 1e308 against a fitted one) as a
    bound, not 'infx'; one within 1% as a percentage (1.003 read '1x': beyond, but by how much?)."""
    if ratio < 1.01:
        return f"{(ratio - 1) * 100:.2g}%"
    return f"{ratio:.3g}x" if math.isfinite(ratio) else "over 1e+308x"


def _apart(value: float, bound: float) -> tuple[str, str]:
    """Both numbers to 3 significant digits, or as many more as tell them apart: int1's GMSE
    0.3634 against a fitted end of 0.363 read '0.363 is above the largest fitted (0.363)'."""
    for digits in range(3, 18):
        shown = f"{value:.{digits}g}", f"{bound:.{digits}g}"
        if shown[0] != shown[1]:
            return shown
    return shown


class FittedRange(Frozen):
    """The smallest and largest N (non-embedding parameters) and D/N (tokens per parameter)
    of the runs a law's constants were fitted on."""

    params: tuple[float, float] = Field(description="[smallest, largest] N of the fitted runs")
    tokens_per_param: tuple[float, float] = Field(description="[smallest, largest] D/N of the fitted runs")
    runs: int = Field(ge=1, description="how many runs")
    provenance: str = Field(min_length=1, description="which runs")
    gmse: dict[Family, tuple[float, float]] | None = Field(
        default=None, description="per lossy family, [smallest, largest] stage GMSE of the fitted runs (a family "
                                  "absent: no fitted run had it); None: not recorded")

    @model_validator(mode="after")
    def _check(self) -> FittedRange:
        pairs = [(key, getattr(self, key)) for key in ("params", "tokens_per_param")]
        pairs += [(f"gmse.{family.value}", pair) for family, pair in (self.gmse or {}).items()]
        for key, (low, high) in pairs:
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise LawError(f"fitted_range.{key} = [{low}, {high}] must be two positive finite numbers, low first")
        if self.gmse and Family.NONE in self.gmse:
            raise LawError("fitted_range.gmse: 'none' is no lossy family")
        return self

    def beyond(self, params: float, tokens: float) -> str | None:
        """Why (N, D) lies beyond the fitted runs, in one clause per axis; None inside."""
        reasons = []
        for what, value, (low, high), show in (
            ("N", params, self.params, si),
            ("D/N", tokens / params, self.tokens_per_param, lambda x: f"{x:.4g}"),
        ):
            if value < low * (1 - _EDGE):
                reasons.append(f"{what} = {show(value)} is {_times(low / value)} below the smallest fitted ({show(low)})")
            elif value > high * (1 + _EDGE):
                reasons.append(f"{what} = {show(value)} is {_times(value / high)} above the largest fitted ({show(high)})")
        if not reasons:
            return None
        return "; ".join(reasons)

    def beyond_gmse(self, stages: Iterable[tuple[Family, float]],
                    rho: Callable[[Family, float], float] | None = None) -> str | None:
        """Why a capacity read at these (family, GMSE) stages lies beyond the fitted stages:
        a family no fitted run had, a GMSE above its family's largest, or (given the law's
        capacity ``rho``) one below its smallest where the curve reads over :data:`FLAT` more
        than there; None otherwise."""
        if self.gmse is None:
            return None
        reasons: list[str] = []
        for family, value in stages:
            family = Family(family)
            if family is Family.NONE:
                continue
            if family not in self.gmse:
                reason = f"no fitted run had a {family.value} stage"
            elif value > self.gmse[family][1] * (1 + _EDGE):
                shown, high = _apart(value, self.gmse[family][1])
                reason = f"{family.value} GMSE {shown} is above the largest fitted ({high})"
            elif (rho is not None and value < (low := self.gmse[family][0]) * (1 - _EDGE)
                  and float(rho(family, value)) > float(rho(family, low)) * (1 + FLAT)):
                # no value of the row's own in the text, so the rows below one fitted end share a line
                reason = (f"{family.value} GMSE below the smallest fitted ({low:.3g}, rho {float(rho(family, low)):.3g}), "
                          f"where the curve still rises by over {FLAT:.0%}")
            else:
                continue
            if reason not in reasons:
                reasons.append(reason)
        return "; ".join(reasons) or None

    def describe(self) -> str:
        """``104 runs, N 30.5M-822M, D/N 24.32-100.9``."""
        (n_low, n_high), (t_low, t_high) = self.params, self.tokens_per_param
        return f"{self.runs} runs, N {si(n_low)}-{si(n_high)}, D/N {t_low:.4g}-{t_high:.4g}"


def fitted_range_of(
    params: Sequence[float],
    tokens: Sequence[float],
    provenance: str,
    stages: Iterable[tuple[Family, float]] | None = None,
) -> FittedRange:
    """The range of runs with these N and D (one entry per run) and, if given, the (family,
    GMSE) of every lossy stage of them (lossless ones, GMSE 0 or family none, are skipped)."""
    if len(params) == 0 or len(params) != len(tokens):
        raise LawError(f"a fitted range needs one N and one D per run (got {len(params)} and {len(tokens)})")
    per_param = [d / n for n, d in zip(params, tokens, strict=True)]
    gmse: dict[Family, tuple[float, float]] | None = None
    if stages is not None:
        gmse = {}
        for family, value in stages:
            family = Family(family)
            if family is Family.NONE or not value > 0:
                continue
            low, high = gmse.get(family, (value, value))
            gmse[family] = (min(low, float(value)), max(high, float(value)))
    return FittedRange(
        params=(float(min(params)), float(max(params))),
        tokens_per_param=(float(min(per_param)), float(max(per_param))),
        runs=len(params),
        provenance=provenance,
        gmse=gmse,
    )

