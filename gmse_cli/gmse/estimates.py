"""GMSE results: a point estimate with its 95% interval, a paired difference, effective bits.

A result is checked against rate-distortion theory as it is made: a format whose effective
bits exceed its stored bits per parameter (GMSE < 4^-bits) has a broken compressor or bit
accounting, and :func:`make_estimate` raises instead of reporting it.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, PrivateAttr

from gmse_cli.errors import SpecError, described
from gmse_cli.frozen import Frozen
from gmse_cli.limits import is_real
from gmse_cli.spec import Format

__all__ = [
    "Z95",
    "t95",
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
    """A GMSE point estimate with its 95% interval (Student's t on the degrees of freedom of the
    unit totals, rows or batches, for Monte Carlo: see :mod:`gmse_cli.gmse.bank`)."""

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
    # Not a field (nothing prints it): kept with a cached GMSE so that the value read back has
    # the interval it was computed with.
    _dof: float | None = PrivateAttr(default=None)

    @property
    def dof(self) -> float | None:
        """Degrees of freedom of ``std_err``'s estimate, whose t quantile the interval took;
        None for a normal interval (exact, or not recorded)."""
        return self._dof


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
    # 0.0 - x, not -x: GMSE 1 (nothing kept) is 0 bits, not -0.0
    return 0.0 - math.log(gmse) / math.log(4.0) if gmse > 0 else None


_DOF_AS_NORMAL = 1e17
"""Beyond this many degrees of freedom every term of t95's expansion past Z95 is below half
Z95's last bit, so the sum is Z95 (and from 1.2e77 on, dof**4 would overflow)."""


def t95(dof: float) -> float:
    """The two-sided 95% quantile of Student's t with ``dof`` degrees of freedom (Z95 for
    ``math.inf``): exact for 1 and 2, else the Cornish-Fisher expansion to 1/dof^4, within
    0.12% of the exact at 3 degrees of freedom and 1e-4 from 5 on (no scipy import)."""
    if not is_real(dof):
        raise SpecError(f"t95: dof must be a number of degrees of freedom (at least 1, or math.inf), not {described(dof)}")
    if dof == math.inf or dof > _DOF_AS_NORMAL:
        return Z95
    if not dof >= 1:
        raise SpecError(f"t95: dof {dof} must be at least 1")
    if dof < 2:
        return math.tan(0.475 * math.pi)
    if dof < 3:
        return 0.95 / math.sqrt(2 * 0.975 * 0.025)
    z, v = Z95, float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def interval95(
    value: float, std_err: float, *, floor: float | None = 0.0, dof: float = math.inf
) -> tuple[float, float]:
    """The 95% interval ``value -+ t95(dof) * std_err`` (normal for infinite ``dof``), its low
    end clipped at ``floor`` (an error ratio is never negative; ``None`` for a difference,
    which may be). ``dof``: the degrees of freedom of ``std_err``'s estimate; a standard error
    from 32 batch totals needs 2.04, not 1.96, standard errors for 95%."""
    for what, number in (("value", value), ("std_err", std_err), ("floor", 0.0 if floor is None else floor)):
        if not is_real(number):
            raise SpecError(f"interval95: {what} must be a number, not {described(number)}")
    half = t95(dof) * std_err
    low = value - half
    return (low if floor is None else max(low, floor)), value + half


def make_estimate(
    fmt: Format, row_length: int, g: float, se: float, method: str, samples: int, *, dof: float = math.inf
) -> GmseEstimate:
    """The estimate of ``fmt`` at ``row_length``; raises when it breaks the rate-distortion bound.
    ``dof``: the degrees of freedom of ``se``'s estimate (see :func:`interval95`)."""
    bits = fmt.bits_per_param(row_length)
    eff = effective_bits_of(g)
    # Rate-distortion: GMSE >= 4^-bits for any code of `bits` bits per Gaussian entry. Without
    # a quantizer nothing is coded: the kept values stay as they are (counted as bf16, kept as
    # float32, and infinitely precise in the exact path), so no bound applies: pruning 1e-12
    # of the entries loses 5e-37, a rotation's float32 round-off ~1e-14.
    coded = fmt.quantizer is not None
    if coded and eff is not None and eff - _RD_SLACK_BITS - (Z95 * se / g / math.log(4.0) if g > 0 else 0.0) > bits:
        raise SpecError(
            f"format '{fmt.display_name}' breaks the rate-distortion bound: {eff:.3f} effective bits "
            f"from {bits:.3f} stored bits per parameter (its compressor or bit accounting is wrong)"
        )
    low, high = interval95(g, se, dof=dof)
    est = GmseEstimate(
        name=fmt.display_name, bits_per_param=bits, gmse=g, ci_low=low,
        ci_high=high, std_err=se, effective_bits=eff, method=method, samples=samples,
    )
    est._dof = dof if math.isfinite(dof) else None
    return est
