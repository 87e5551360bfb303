"""GMSE results: a point estimate with its 95% interval, a paired difference, effective bits.

A result is checked against rate-distortion theory as it is made: a format whose effective
bits exceed its stored bits per parameter (GMSE < 4^-bits) has a broken compressor or bit
accounting, and :func:`make_estimate` raises instead of reporting it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from gmse_cli.errors import SpecError
from gmse_cli.frozen import Frozen
from gmse_cli.spec import Format

__all__ = [
    "Z95",
    "GmseEstimate",
    "GmseDifference",
    "effective_bits_of",
    "interval95",
    "make_estimate",
]

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# Effective bits may exceed stored bits only by Monte Carlo noise; anything beyond is a bug.
_RD_SLACK_BITS = 0.01


class GmseEstimate(Frozen):
    """A GMSE point estimate with its 95% interval."""

    name: str = Field(description="the format's display name")
    bits_per_param: float = Field(description="stored bits per parameter at this row length")
    gmse: float = Field(description="E||x - C(x)||^2 / E||x||^2 for standard normal x")
    ci_low: float = Field(description="lower end of the 95% interval")
    ci_high: float = Field(description="upper end of the 95% interval")
    std_err: float = Field(description="standard error (0 for the exact method)")
    effective_bits: float | None = Field(description="log_{1/4}(GMSE); None when GMSE is 0")
    method: Literal["exact", "monte-carlo", "table", "cache"] = Field(
        description="what gave the number: computed now (exact or monte-carlo) or read from the shipped "
        "table or the on-disk cache (std_err 0: computed exactly)"
    )
    samples: int = Field(description="Gaussian elements behind it (0 for the exact method)")


class GmseDifference(Frozen):
    """GMSE(a) - GMSE(b) on common random numbers, with its (much tighter) paired interval."""

    a: str
    b: str
    difference: float
    ci_low: float
    ci_high: float
    std_err: float
    samples: int


def effective_bits_of(gmse: float) -> float | None:
    """log_{1/4}(GMSE), or None for a lossless result."""
    return -math.log(gmse) / math.log(4.0) if gmse > 0 else None


def interval95(value: float, std_err: float, *, floor: float | None = 0.0) -> tuple[float, float]:
    """The normal 95% interval ``value -+ Z95 * std_err``, its low end clipped at ``floor``
    (an error ratio is never negative; ``None`` for a difference, which may be)."""
    half = Z95 * std_err
    low = value - half
    return (low if floor is None else max(low, floor)), value + half


def make_estimate(fmt: Format, row_length: int, g: float, se: float, method: str, samples: int) -> GmseEstimate:
    """The estimate of ``fmt`` at ``row_length``; raises when it breaks the rate-distortion bound."""
    bits = fmt.bits_per_param(row_length)
    eff = effective_bits_of(g)
    # Rate-distortion: GMSE >= 4^-bits for any code of `bits` bits per Gaussian entry.
    if eff is not None and eff - _RD_SLACK_BITS - (Z95 * se / g / math.log(4.0) if g > 0 else 0.0) > bits:
        raise SpecError(
            f"format '{fmt.display_name}' breaks the rate-distortion bound: {eff:.3f} effective bits "
            f"from {bits:.3f} stored bits per parameter (its compressor or bit accounting is wrong)"
        )
    low, high = interval95(g, se)
    return GmseEstimate(
        name=fmt.display_name, bits_per_param=bits, gmse=g, ci_low=low,
        ci_high=high, std_err=se, effective_bits=eff, method=method, samples=samples,
    )
