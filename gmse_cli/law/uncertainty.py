"""Uncertainty: capacity and loss intervals by Monte Carlo over the law's constants.

Intervals (:func:`sample_law`, :func:`capacity_interval`, :func:`loss_interval`) are
propagated by Monte Carlo over the constants, seeded, not by the delta method: rho is bounded
and strongly curved in F and C, so a linearization misplaces the interval's ends.

Joint draws. A law file may carry a ``[draws]`` table: rows of the constants drawn together
(for the shipped law, each row refits A and B on bootstrapped runs with alpha, beta, E and the
curves drawn first, so A and B compensate them as the data demand; see
``examples/calibrate_paper_law.py``). Then every Monte Carlo draw takes one whole row, rows
resampled with replacement by the seeded generator, for every constant the table has a column
of. The constants it lacks, and every constant of a law without draws, are drawn independently
from their marginals:

- ``low`` and ``high`` given: a split normal with the mode at ``value`` and each half's sigma
  = (distance to that end) / 1.96, reading [low, high] as a central 95% interval;
- only ``sigma``: a normal; neither: the constant is fixed;
- draws are truncated (rejection, then clipping as a last resort) to the physical domain:
  A, alpha, B, beta, F, C > 0, E >= 0, and 0 < L <= 1 because a compressed model never has
  more capacity than its dense self, where the value of L respects that; a fitted L above 1
  is drawn up to MAX_L (2), not cut at its own value, which would put every draw below the
  point (:func:`~gmse_cli.law.model.L_ceiling`; a file's joint draws must lie in it too);
- each stage's GMSE is drawn from a normal with its standard error (0 for exact quadrature),
  truncated to GMSE > 0, independently of the constants.

L is held at its value unless ``vary_L=True``. The paper's L = 1.0 +/- 0.7 (Llama/C4) next to
F = 0.41 +/- 0.02 cannot be an uncertainty about capacity relative to the dense model: 8-bit
runs (rho ~ L * 0.99) pin that ratio to a few percent. A spread that wide means L trades off
against A in the bootstrap -- A (N L t)^-alpha only fixes A * L^-alpha once the dense runs too
are read through the curve -- so L is not identified alone, and drawing it independently of A
would report a 95% capacity interval of [0.05, 0.82] for int4, which the fit's own predictions
(of loss, where A compensates) never show. ``vary_L=True`` draws it anyway (truncated as above),
independently of the joint rows. An L that the joint draws carry is always taken from its row,
whatever ``vary_L`` says: the row's A was fitted with that L, so holding L at its value while A
moves would break the compensation. (The shipped law's draws hold L at 1 and carry no L column.)
The interval is the central ``level`` quantile range of the draws, widened if needed so it
always contains the point value (computed from the constants' values, not the draws' median).

Without joint draws, loss intervals are wide: A (and B) are usually calibrated with alpha
(beta) held at one value, so they trade off the way L and A do; drawn independently, alpha's
+/-0.05 moves A N^-alpha by a factor of several and the interval on the loss itself spans
nats. Differences between formats at one N and D (the loss minus the dense model's, computed
draw by draw) cancel E and B D^-beta and stay tight either way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from gmse_cli.errors import LawError, described
from gmse_cli.frozen import Frozen
from gmse_cli.law.compose import checked_law, factorized_capacity, stage_list
from gmse_cli.law.model import Constant, L_ceiling, Law, capacity, number_array, predicted_loss
from gmse_cli.limits import check_seed, is_flag, is_real, is_whole
from gmse_cli.spec import Family

__all__ = [
    "DEFAULT_DRAWS", "MAX_DRAWS", "Interval", "LawSamples", "sample_constant", "sample_law",
    "capacity_interval", "loss_interval", "check_draws", "check_scale", "check_level", "interval_ends",
    "constants_fixed",
]

_Z95 = 1.959963984540054  # standard normal 97.5% quantile: [low, high] read as a 95% interval
# Monte Carlo draws of the constants. The 2.5% quantile of 2000 draws sits within 0.35
# percentage points of probability (one standard error), about 0.06 sigma of the quantity:
# the last printed digit of an interval. A catalog's draws then cost a few tens of ms.
DEFAULT_DRAWS = 2000
# A catalog's (rows, draws) matrices stay in the tens of MB; quantiles need nothing near this.
MAX_DRAWS = 100_000
_REJECTION_ROUNDS = 200


class Interval(Frozen):
    """A point value with a central interval from Monte Carlo draws."""

    value: float
    low: float
    high: float
    level: float = Field(gt=0, lt=1, description="coverage of [low, high], e.g. 0.95")


def _truncated_split_normal(
    center: float, sigma_minus: float, sigma_plus: float, *, size: int, rng: np.random.Generator,
    lower: float = -math.inf, upper: float = math.inf,
) -> np.ndarray:
    """Split-normal draws kept inside (lower, upper]; redrawn, so the shape is truncated, not piled up."""
    out = np.empty(size)
    todo = np.arange(size)
    for _ in range(_REJECTION_ROUNDS):
        z = rng.standard_normal(todo.size)
        x = center + z * np.where(z < 0, sigma_minus, sigma_plus)
        ok = (x > lower) & (x <= upper)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
        if not todo.size:
            return out
    # Only a bound far inside the tail gets here; pin the stragglers to the nearest legal value.
    tiny = abs(lower) * 1e-9 + 1e-300 if math.isfinite(lower) else 0.0
    out[todo] = np.clip(center, lower + tiny, upper)
    return out


def _half_sigmas(const: Constant) -> tuple[float, float]:
    # each side's sigma: (distance to low or high) / 1.96 where given, else sigma; (0, 0) is fixed
    sigma = const.sigma or 0.0
    sigma_minus = (const.value - const.low) / _Z95 if const.low is not None else sigma
    sigma_plus = (const.high - const.value) / _Z95 if const.high is not None else sigma
    return max(sigma_minus, 0.0), max(sigma_plus, 0.0)


def sample_constant(
    const: Constant, *, size: int, rng: np.random.Generator,
    lower: float = -math.inf, upper: float = math.inf,
) -> np.ndarray:
    """``size`` draws of one constant inside (lower, upper] (the model: module docstring)."""
    value = const.value
    sigma_minus, sigma_plus = _half_sigmas(const)
    if sigma_minus == 0.0 and sigma_plus == 0.0:
        return np.full(size, value)
    return _truncated_split_normal(
        value, sigma_minus, sigma_plus, size=size, rng=rng, lower=lower, upper=max(upper, value)
    )


def _gmse_draws(gmse: float, std_err: float, *, size: int, rng: np.random.Generator) -> np.ndarray:
    # a negative or nan standard error is a slip, never "no uncertainty" (it gave a wrong interval)
    if not is_real(std_err) or not std_err >= 0:
        raise LawError(f"GMSE standard error = {std_err!r} must be a number at least 0")
    if not std_err or not math.isfinite(std_err) or gmse <= 0:
        return np.full(size, gmse)
    return _truncated_split_normal(gmse, std_err, std_err, size=size, rng=rng, lower=0.0)


@dataclass(frozen=True)
class LawSamples:
    """Joint draws of a law's constants: element i of every array belongs to draw i.

    One set of draws is shared by every format of a comparison, so their intervals are
    consistent (a common L moves all quantization formats together).
    """

    law: Law
    A: np.ndarray
    alpha: np.ndarray
    B: np.ndarray
    beta: np.ndarray
    E: np.ndarray
    curves: dict[Family, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def draws(self) -> int:
        return self.A.size

    def rho(self, family: Family | str, gmse: np.ndarray | float) -> np.ndarray:
        """Capacity draws of one stage (``gmse`` a scalar or one value per draw)."""
        family = Family(family)
        if family is Family.NONE:
            return np.ones(self.draws)
        shape = self.law.curve(family).shape  # the LawError naming the covered families
        L, F, C = self.curves[family]
        return np.asarray(capacity(gmse, L, F, C, shape=shape), dtype=float) * np.ones(self.draws)

    def capacity(
        self, stages: Iterable[tuple[Family | str, float, float]], *, rng: np.random.Generator
    ) -> np.ndarray:
        """Factorized capacity draws over (family, GMSE, GMSE standard error) stages."""
        rho = np.ones(self.draws)
        for family, gmse, std_err in stages:
            rho = rho * self.rho(family, _gmse_draws(gmse, std_err, size=self.draws, rng=rng))
        return rho

    def loss(self, params: float, tokens: float, rho: np.ndarray | float) -> np.ndarray:
        return np.asarray(
            predicted_loss(params, tokens, rho, A=self.A, alpha=self.alpha, B=self.B, beta=self.beta, E=self.E),
            dtype=float,
        )


def check_draws(draws: int) -> None:
    """Raise :class:`LawError` unless ``draws`` is a usable number of Monte Carlo draws."""
    if not is_whole(draws):
        raise LawError(f"draws = {draws!r} must be a whole number of Monte Carlo draws (e.g. {DEFAULT_DRAWS})")
    if draws < 2:
        raise LawError(f"draws = {draws}: need at least 2 Monte Carlo draws for an interval")
    if draws > MAX_DRAWS:
        raise LawError(f"draws = {draws}: at most {MAX_DRAWS} (more adds nothing to a printed interval)")


def constants_fixed(law: Law, *, vary_L: bool = False) -> bool:
    """Whether :func:`sample_law` holds every constant of ``law`` at its value: no constant with a
    sigma or a ``low``/``high`` apart from it (each family's L only counts with ``vary_L``), and no
    joint draws column that varies. Then every interval carries only the GMSE's own error (none
    for a table or exact GMSE) and collapses to the point: a hand-written law says nothing of how
    far its constants are known."""
    law = checked_law(law)
    _check_vary_L(vary_L)
    joint = law.draws.constants if law.draws is not None else {}
    if any(min(column) != max(column) for column in joint.values()):
        return False
    for name, const in law.constants().items():
        if name in joint or (name.endswith(".L") and not vary_L):
            continue
        if _half_sigmas(const) != (0.0, 0.0):
            return False
    return True


def sample_law(
    law: Law, *, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0, vary_L: bool = False
) -> LawSamples:
    """Monte Carlo draws of the constants of ``law`` (``rng`` a Generator or a seed): whole rows
    of the law's joint draws where it has them, marginals for the rest; each family's L is held
    at its value unless ``vary_L`` or the joint draws carry it (why: module docstring)."""
    law = checked_law(law)
    check_draws(draws)
    _check_vary_L(vary_L)
    rng = _generator(rng)
    joint = law.draws.resample(draws, rng) if law.draws is not None else {}

    def draw(name: str, const: Constant, lower: float = 0.0, upper: float = math.inf) -> np.ndarray:
        if name in joint:
            return joint[name]
        return sample_constant(const, size=draws, rng=rng, lower=lower, upper=upper)

    def draw_L(name: str, const: Constant) -> np.ndarray:
        if name in joint or vary_L:
            return draw(name, const, upper=L_ceiling(const.value))
        return np.full(draws, const.value)

    curves = {
        family: (draw_L(f"{family}.L", curve.L), draw(f"{family}.F", curve.F), draw(f"{family}.C", curve.C))
        for family, curve in sorted(law.families.items())  # fixed order: same seed, same draws
    }
    return LawSamples(
        law=law, A=draw("A", law.A), alpha=draw("alpha", law.alpha), B=draw("B", law.B), beta=draw("beta", law.beta),
        E=draw("E", law.E), curves=curves,
    )


def interval_ends(draws: np.ndarray, level: float) -> np.ndarray:
    """The central ``level`` interval of each row of ``draws`` (..., n) as a (2, ...) array: the
    inverted-CDF quantiles (numpy's ``method="inverted_cdf"``: the sample at index
    ceil(n q) - 1), so no interpolation, and draws with rho = 0 (an infinite loss) give inf, not
    nan. Both ends by partial sorts of one copy: a sixth of np.quantile's time on a rank's
    80 x 2000 draws (numpy's partition at two indices at once, or into two fresh arrays, is
    several times slower)."""
    check_level(level)
    work = number_array("draws", draws).astype(float)  # a copy: partitioned in place below
    if work.ndim == 0 or work.shape[-1] == 0:
        raise LawError(f"draws must be an array of draws along its last axis, not {described(draws)}")
    n = work.shape[-1]
    ends = []
    for i in (max(math.ceil(n * q) - 1, 0) for q in ((1 - level) / 2, (1 + level) / 2)):
        work.partition(i, axis=-1)
        ends.append(work[..., i].copy())  # read before the next partition moves it
    return np.stack(ends)


def _interval(draws: np.ndarray, value: float, *, level: float) -> Interval:
    low, high = interval_ends(draws, level)
    return Interval(value=value, low=min(float(low), value), high=max(float(high), value), level=level)


def check_level(level: float) -> None:
    """Raise :class:`LawError` unless ``level`` is a coverage strictly between 0 and 1 (text,
    None, a bool or an array named as such, not compared)."""
    if not is_real(level):
        raise LawError(f"level = {level!r} must be a number in (0, 1), e.g. 0.95")
    if not 0.0 < level < 1.0:
        raise LawError(f"level = {level} must lie in (0, 1), e.g. 0.95")


def _check_vary_L(vary_L: object) -> None:
    """One LawError naming ``vary_L`` unless it is True or False: text, an object or {} would
    otherwise pass as Python's truth of it."""
    if not is_flag(vary_L):
        raise LawError(f"vary_L must be True or False, not {described(vary_L)}")


def _given_samples(samples: object) -> LawSamples | None:
    """``samples`` if it is a LawSamples or None, else one LawError naming it ({} read as None
    before, and was silently replaced by fresh draws)."""
    if samples is not None and not isinstance(samples, LawSamples):
        raise LawError(f"samples must be a LawSamples (sample_law gives one) or None, not {described(samples)}")
    return samples


def _generator(rng: object) -> np.random.Generator:
    """``rng`` if it is a Generator, else one seeded with it: a seed the command line takes
    (0 .. 2**63 - 1), or the SpecError naming it, never numpy's TypeError."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(check_seed(rng, "rng"))


def capacity_interval(
    law: Law, stages: Sequence[tuple[Family | str, float, float]], *,
    level: float = 0.95, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0,
    samples: LawSamples | None = None, vary_L: bool = False,
) -> Interval:
    """Factorized capacity of (family, GMSE, GMSE standard error) stages with its interval.

    Pass ``samples`` to share one set of constant draws across many calls.
    """
    check_level(level)
    law, stages = checked_law(law), stage_list(stages, 3)
    law.check_covers(family for family, _, _ in stages)
    rng = _generator(rng)
    _check_vary_L(vary_L)
    samples = _given_samples(samples) or sample_law(law, draws=draws, rng=rng, vary_L=vary_L)
    value = factorized_capacity(law, [(family, gmse) for family, gmse, _ in stages])
    return _interval(samples.capacity(stages, rng=rng), value, level=level)


def loss_interval(
    law: Law, params: float, tokens: float, stages: Sequence[tuple[Family | str, float, float]], *,
    level: float = 0.95, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0,
    samples: LawSamples | None = None, vary_L: bool = False,
) -> Interval:
    """Predicted loss of a model of ``params`` parameters trained on ``tokens`` tokens over the
    given stages, with the interval from the constants' and the GMSEs' uncertainty."""
    check_level(level)
    check_scale(params, tokens)
    law, stages = checked_law(law), stage_list(stages, 3)
    law.check_covers(family for family, _, _ in stages)
    rng = _generator(rng)
    _check_vary_L(vary_L)
    samples = _given_samples(samples) or sample_law(law, draws=draws, rng=rng, vary_L=vary_L)
    rho = factorized_capacity(law, [(family, gmse) for family, gmse, _ in stages])
    value = float(law.loss(params, tokens, rho))
    return _interval(samples.loss(params, tokens, samples.capacity(stages, rng=rng)), value, level=level)


def check_scale(params: float, tokens: float) -> None:
    """Raise :class:`LawError` unless the parameter and token counts are finite counts of at least
    one (the command line's rule: a fraction of a parameter or token is a unit slip)."""
    for what, value, example in (("params", params, "200e6"), ("tokens", tokens, "20e9")):
        if not is_real(value) or not (_finite(value) and value >= 1):
            raise LawError(f"{what} = {value!r} must be a finite count of at least 1 (e.g. {example})")



def _finite(value: numbers.Real) -> bool:
    """math.isfinite, with an integer beyond any float (10**400) not finite rather than an OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
