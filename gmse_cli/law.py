"""The capacity law and the scaling law, and the law files that carry their constants.

    rho(GMSE) = L * tanh(F * log_{1/4}(GMSE))^C            (one L, F, C per family)
    Loss(N, D) = A * (N * rho)^(-alpha) + B * D^(-beta) + E

A law file is TOML; every constant carries its value, optional 1-sigma and interval, and its
provenance::

    name = "paper-llama-c4"
    description = "..."
    [meta]                 # free-form strings: data files, fit options, date, version
    [A]                    # value, sigma?, low?, high?, provenance
    [alpha] / [B] / [beta] / [E]
    [families.quantization.L] / .F / .C
    [families.sparsity.L] ...
    [families.vq.L] ...

Composite formats and weight x activation schemes multiply per-stage capacities (the paper's
factorization, rho(R1 and R2) = rho(R1) * rho(R2)): :func:`capacity_parts` lists the lossy
stages of a :class:`~gmse_cli.spec.Format` or :class:`~gmse_cli.spec.Scheme` (each with its
family and a standalone format to measure), :func:`factorized_capacity` multiplies. The
"single-GMSE" alternative -- the whole pipeline's GMSE through the curve of its last lossy
stage -- is :func:`single_gmse_capacity`; it equals the factorized value for one-stage formats.

Uncertainty (:func:`sample_law`, :func:`capacity_interval`, :func:`loss_interval`) is
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
  A, alpha, B, beta, F, C > 0, E >= 0, and 0 < L <= max(1, value) because a compressed model
  never has more capacity than its dense self (a file's joint draws must lie in it too);
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
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gmse_cli.errors import LawError
from gmse_cli.spec import Family, Format, Scheme

__all__ = [
    "Constant",
    "FamilyCurve",
    "Law",
    "LawDraws",
    "effective_bits",
    "capacity",
    "predicted_loss",
    "load_law",
    "save_law",
    "law_to_toml",
    "shipped_law",
    "DEFAULT_LAW",
    "CapacityPart",
    "capacity_parts",
    "factorized_capacity",
    "single_gmse_capacity",
    "scheme_capacity",
    "Interval",
    "LawSamples",
    "sample_constant",
    "sample_law",
    "capacity_interval",
    "loss_interval",
    "check_scale",
    "DEFAULT_DRAWS",
    "MAX_DRAWS",
    "check_draws",
    "tensor_parts",
]

DEFAULT_LAW = "paper-llama-c4"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Constant(_Model):
    """One fitted constant with its uncertainty and where it came from."""

    value: float
    sigma: float | None = Field(default=None, ge=0, description="1-sigma uncertainty")
    low: float | None = Field(default=None, description="lower end of its interval (e.g. bootstrap 95%)")
    high: float | None = Field(default=None, description="upper end of its interval")
    provenance: str = Field(min_length=1, description="where the number came from")

    @model_validator(mode="after")
    def _check(self) -> Constant:
        if not math.isfinite(self.value):
            raise LawError(f"constant value {self.value} is not finite")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise LawError(f"constant interval [{self.low}, {self.high}] is reversed")
        return self


class FamilyCurve(_Model):
    """The capacity curve rho = L * tanh(F * log_{1/4} GMSE)^C of one family."""

    L: Constant
    F: Constant
    C: Constant

    @model_validator(mode="after")
    def _check(self) -> FamilyCurve:
        for key in ("L", "F", "C"):
            if getattr(self, key).value <= 0:
                raise LawError(f"capacity constant {key} = {getattr(self, key).value} must be positive")
        return self

    def rho(self, gmse: np.ndarray | float) -> np.ndarray | float:
        return capacity(gmse, self.L.value, self.F.value, self.C.value)


_LAW_KEYS = ("A", "alpha", "B", "beta", "E")
_CURVE_KEYS = ("L", "F", "C")


class LawDraws(_Model):
    """Joint draws of a law's constants: element i of every column belongs to draw i.

    Columns are named as ``uscl fit --fix`` names constants: ``A``, ``alpha``, ``B``, ``beta``,
    ``E``, ``<family>.L`` / ``.F`` / ``.C``. A constant without a column is drawn from its
    marginal (see the module docstring).
    """

    provenance: str = Field(min_length=1, description="how the draws were made")
    constants: dict[str, tuple[float, ...]] = Field(min_length=1, description="one column of draws per constant")

    @model_validator(mode="after")
    def _check(self) -> LawDraws:
        lengths = {name: len(column) for name, column in self.constants.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name} {n}" for name, n in lengths.items())
            raise LawError(f"every column needs the same number of rows (got {shown})")
        if self.rows < 2:
            raise LawError(f"{self.rows} row(s); joint draws need at least 2")
        for name, column in self.constants.items():
            if not all(math.isfinite(x) for x in column):
                raise LawError(f"column '{name}' has a value that is not finite")
        return self

    @property
    def rows(self) -> int:
        return len(next(iter(self.constants.values())))

    def resample(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``size`` rows drawn with replacement, as one array per column."""
        pick = rng.integers(0, self.rows, size=size)
        return {name: np.asarray(column, dtype=float)[pick] for name, column in self.constants.items()}


class Law(_Model):
    """A scaling law with per-family capacity curves, and optionally joint draws of its constants."""

    name: str
    description: str = ""
    meta: dict[str, str] = Field(default_factory=dict)
    A: Constant
    alpha: Constant
    B: Constant
    beta: Constant
    E: Constant
    families: dict[Family, FamilyCurve] = Field(default_factory=dict)
    draws: LawDraws | None = Field(default=None, description="joint draws of the constants, if any")

    @model_validator(mode="after")
    def _check(self) -> Law:
        for key in ("A", "alpha", "B", "beta"):
            if getattr(self, key).value <= 0:
                raise LawError(
                    f"law '{self.name}': {key} = {getattr(self, key).value} must be positive (check its sign)"
                )
        if self.E.value < 0:
            raise LawError(f"law '{self.name}': E = {self.E.value} must not be negative")
        if self.draws is not None:
            self._check_draws(self.draws)
        return self

    def constants(self) -> dict[str, Constant]:
        """Every constant by the name a draws column (or ``uscl fit --fix``) uses."""
        out = {key: getattr(self, key) for key in _LAW_KEYS}
        for family, curve in self.families.items():
            out |= {f"{family.value}.{key}": getattr(curve, key) for key in _CURVE_KEYS}
        return out

    def _check_draws(self, draws: LawDraws) -> None:
        # The domain the marginal draws are truncated to (module docstring).
        known = self.constants()
        for name, column in draws.constants.items():
            if name not in known:
                raise LawError(
                    f"law '{self.name}': draws column '{name}' is not a constant of this law "
                    f"(known: {', '.join(known)})"
                )
            lowest, highest = min(column), max(column)
            if name == "E" and lowest < 0:
                raise LawError(f"law '{self.name}': draws of E reach {lowest}; E must not be negative")
            if name != "E" and lowest <= 0:
                raise LawError(f"law '{self.name}': draws of {name} reach {lowest}; {name} must be positive")
            if name.endswith(".L") and highest > max(1.0, known[name].value):
                raise LawError(
                    f"law '{self.name}': draws of {name} reach {highest}; L may not exceed max(1, its value)"
                )

    def curve(self, family: Family | str) -> FamilyCurve:
        family = Family(family)
        if family not in self.families:
            covered = ", ".join(f.value for f in self.families) or "none"
            raise LawError(f"law '{self.name}' has no capacity curve for family '{family}' (it covers: {covered})")
        return self.families[family]

    def rho(self, family: Family | str, gmse: np.ndarray | float) -> np.ndarray | float:
        """Capacity of one lossy stage of ``family``; lossless stages (family none) give 1."""
        if Family(family) is Family.NONE:
            return np.ones_like(np.asarray(gmse, dtype=float)) if np.ndim(gmse) else 1.0
        return self.curve(family).rho(gmse)

    def check_covers(self, families: Iterable[Family | str]) -> None:
        """Raise :class:`LawError` unless every lossy family has a curve in this law."""
        for family in families:
            if Family(family) is not Family.NONE:
                self.curve(family)

    def loss(self, params: np.ndarray | float, tokens: np.ndarray | float, rho: np.ndarray | float = 1.0):
        return predicted_loss(
            params, tokens, rho,
            A=self.A.value, alpha=self.alpha.value, B=self.B.value, beta=self.beta.value, E=self.E.value,
        )


def effective_bits(gmse: np.ndarray | float) -> np.ndarray | float:
    """log_{1/4}(GMSE): the bits a rate-distortion-optimal code would need for this error.

    GMSE = 0 (a lossless cast of the samples) gives +inf.
    """
    with np.errstate(divide="ignore"):
        return -np.log(gmse) / math.log(4.0)


def capacity(gmse: np.ndarray | float, L: float, F: float, C: float) -> np.ndarray | float:
    """rho = L * tanh(F * log_{1/4}(GMSE))^C; GMSE >= 1 (nothing kept) gives 0."""
    bits = np.maximum(effective_bits(np.asarray(gmse, dtype=float)), 0.0)
    out = L * np.tanh(F * bits) ** C
    return float(out) if np.ndim(out) == 0 else out


def predicted_loss(params, tokens, rho=1.0, *, A: float, alpha: float, B: float, beta: float, E: float):
    """Loss = A * (N * rho)^(-alpha) + B * D^(-beta) + E."""
    n_eff = np.asarray(params, dtype=float) * np.asarray(rho, dtype=float)
    with np.errstate(divide="ignore"):  # rho = 0 (nothing kept) is an infinite loss, not a warning
        out = A * n_eff ** (-alpha) + B * np.asarray(tokens, dtype=float) ** (-beta) + E
    return float(out) if np.ndim(out) == 0 else out


# --------------------------------------------------------------------------------------------
# Composition: a format's or scheme's capacity from its stages' GMSE
# --------------------------------------------------------------------------------------------

Tensor = Literal["weights", "activations"]


class CapacityPart(NamedTuple):
    """One factor of a capacity product: which tensor, which curve, what to measure GMSE on."""

    tensor: Tensor
    family: Family
    format: Format


def _tensors(item: Format | Scheme) -> list[tuple[Tensor, Format]]:
    if isinstance(item, Format):
        return [("weights", item)]
    pairs: list[tuple[Tensor, Format]] = [("weights", item.weights)]
    if item.activations is not None:
        pairs.append(("activations", item.activations))
    return pairs


def capacity_parts(item: Format | Scheme) -> list[CapacityPart]:
    """The lossy stages the factorized capacity multiplies over (empty for a lossless format).

    Each part's format is the stage alone (rotations ride along with the quantizer), as
    :meth:`Format.stage_formats` gives it: 2:4+int4 is rho_sparsity(GMSE(2:4)) *
    rho_quantization(GMSE(int4)).
    """
    return [
        CapacityPart(tensor, family, stage)
        for tensor, fmt in _tensors(item)
        for family, stage in fmt.stage_formats()
    ]


def tensor_parts(item: Format | Scheme) -> list[CapacityPart]:
    """One part per tensor: the whole pipeline, read through the curve of its last lossy stage.

    This is the single-GMSE alternative to :func:`capacity_parts`; a lossless tensor gets
    family ``none`` (capacity 1).
    """
    return [
        CapacityPart(tensor, fmt.families[-1] if fmt.families else Family.NONE, fmt)
        for tensor, fmt in _tensors(item)
    ]


def factorized_capacity(law: Law, stages: Iterable[tuple[Family | str, float]]) -> float:
    """prod over (family, GMSE) of rho_family(GMSE): the paper's factorization rule."""
    rho = 1.0
    for family, gmse in stages:
        rho *= float(law.rho(family, gmse))
    return rho


def _measured(parts: list[CapacityPart], gmse: Any) -> list[tuple[Family, float]]:
    if callable(gmse):
        values = [float(gmse(p.format)) for p in parts]
    else:
        values = [float(g) for g in gmse]
        if len(values) != len(parts):
            names = ", ".join(p.format.display_name for p in parts) or "none"
            raise LawError(f"got {len(values)} GMSE values for {len(parts)} lossy stages ({names})")
    return [(p.family, g) for p, g in zip(parts, values, strict=True)]


def scheme_capacity(item: Format | Scheme, law: Law, gmse: Any) -> float:
    """Factorized capacity of a format or scheme.

    ``gmse`` is a callable ``Format -> float`` (for example
    ``lambda f: gmse_of(f).gmse``) or the GMSE values in the order of :func:`capacity_parts`.
    """
    parts = capacity_parts(item)
    law.check_covers(p.family for p in parts)
    return factorized_capacity(law, _measured(parts, gmse))


def single_gmse_capacity(item: Format | Scheme, law: Law, gmse: Any) -> float:
    """Capacity from each tensor's whole-pipeline GMSE (values in :func:`tensor_parts` order)."""
    parts = tensor_parts(item)
    law.check_covers(p.family for p in parts)
    return factorized_capacity(law, _measured(parts, gmse))


# --------------------------------------------------------------------------------------------
# Uncertainty: Monte Carlo over the constants (see the module docstring for the model)
# --------------------------------------------------------------------------------------------

_Z95 = 1.959963984540054  # standard normal 97.5% quantile: [low, high] read as a 95% interval
# Monte Carlo draws of the constants. The 2.5% quantile of 2000 draws sits within 0.35
# percentage points of probability (one standard error), about 0.06 sigma of the quantity:
# the last printed digit of an interval. A catalog's draws then cost a few tens of ms.
DEFAULT_DRAWS = 2000
# A catalog's (rows, draws) matrices stay in the tens of MB; quantiles need nothing near this.
MAX_DRAWS = 100_000
_REJECTION_ROUNDS = 200


class Interval(_Model):
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


def sample_constant(
    const: Constant, *, size: int, rng: np.random.Generator,
    lower: float = -math.inf, upper: float = math.inf,
) -> np.ndarray:
    """``size`` draws of one constant inside (lower, upper] (the model: module docstring)."""
    value = const.value
    sigma = const.sigma or 0.0
    sigma_minus = (value - const.low) / _Z95 if const.low is not None else sigma
    sigma_plus = (const.high - value) / _Z95 if const.high is not None else sigma
    sigma_minus, sigma_plus = max(sigma_minus, 0.0), max(sigma_plus, 0.0)
    if sigma_minus == 0.0 and sigma_plus == 0.0:
        return np.full(size, value)
    return _truncated_split_normal(
        value, sigma_minus, sigma_plus, size=size, rng=rng, lower=lower, upper=max(upper, value)
    )


def _gmse_draws(gmse: float, std_err: float, *, size: int, rng: np.random.Generator) -> np.ndarray:
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
        self.law.curve(family)  # the LawError naming the covered families
        L, F, C = self.curves[family]
        return np.asarray(capacity(gmse, L, F, C), dtype=float) * np.ones(self.draws)

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
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral):
        raise LawError(f"draws = {draws!r} must be a whole number of Monte Carlo draws (e.g. {DEFAULT_DRAWS})")
    if draws < 2:
        raise LawError(f"draws = {draws}: need at least 2 Monte Carlo draws for an interval")
    if draws > MAX_DRAWS:
        raise LawError(f"draws = {draws}: at most {MAX_DRAWS} (more adds nothing to a printed interval)")


def sample_law(
    law: Law, *, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0, vary_L: bool = False
) -> LawSamples:
    """Monte Carlo draws of the constants of ``law`` (``rng`` a Generator or a seed): whole rows
    of the law's joint draws where it has them, marginals for the rest; each family's L is held
    at its value unless ``vary_L`` or the joint draws carry it (why: module docstring)."""
    check_draws(draws)
    rng = np.random.default_rng(rng)
    joint = law.draws.resample(draws, rng) if law.draws is not None else {}

    def draw(name: str, const: Constant, lower: float = 0.0, upper: float = math.inf) -> np.ndarray:
        if name in joint:
            return joint[name]
        return sample_constant(const, size=draws, rng=rng, lower=lower, upper=upper)

    def draw_L(name: str, const: Constant) -> np.ndarray:
        if name in joint or vary_L:
            return draw(name, const, upper=1.0)
        return np.full(draws, const.value)

    curves = {
        family: (draw_L(f"{family}.L", curve.L), draw(f"{family}.F", curve.F), draw(f"{family}.C", curve.C))
        for family, curve in sorted(law.families.items())  # fixed order: same seed, same draws
    }
    return LawSamples(
        law=law, A=draw("A", law.A), alpha=draw("alpha", law.alpha), B=draw("B", law.B), beta=draw("beta", law.beta),
        E=draw("E", law.E), curves=curves,
    )


def _interval(draws: np.ndarray, value: float, *, level: float) -> Interval:
    # No interpolation: draws with rho = 0 give an infinite loss, and inf must stay inf (not nan).
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return Interval(value=value, low=min(float(low), value), high=max(float(high), value), level=level)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise LawError(f"level = {level} must lie in (0, 1), e.g. 0.95")


def capacity_interval(
    law: Law, stages: Sequence[tuple[Family | str, float, float]], *,
    level: float = 0.95, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0,
    samples: LawSamples | None = None, vary_L: bool = False,
) -> Interval:
    """Factorized capacity of (family, GMSE, GMSE standard error) stages with its interval.

    Pass ``samples`` to share one set of constant draws across many calls.
    """
    _check_level(level)
    law.check_covers(family for family, _, _ in stages)
    rng = np.random.default_rng(rng)
    samples = samples or sample_law(law, draws=draws, rng=rng, vary_L=vary_L)
    value = factorized_capacity(law, [(family, gmse) for family, gmse, _ in stages])
    return _interval(samples.capacity(stages, rng=rng), value, level=level)


def loss_interval(
    law: Law, params: float, tokens: float, stages: Sequence[tuple[Family | str, float, float]], *,
    level: float = 0.95, draws: int = DEFAULT_DRAWS, rng: np.random.Generator | int = 0,
    samples: LawSamples | None = None, vary_L: bool = False,
) -> Interval:
    """Predicted loss of a model of ``params`` parameters trained on ``tokens`` tokens over the
    given stages, with the interval from the constants' and the GMSEs' uncertainty."""
    _check_level(level)
    check_scale(params, tokens)
    law.check_covers(family for family, _, _ in stages)
    rng = np.random.default_rng(rng)
    samples = samples or sample_law(law, draws=draws, rng=rng, vary_L=vary_L)
    rho = factorized_capacity(law, [(family, gmse) for family, gmse, _ in stages])
    value = float(law.loss(params, tokens, rho))
    return _interval(samples.loss(params, tokens, samples.capacity(stages, rng=rng)), value, level=level)


def check_scale(params: float, tokens: float) -> None:
    """Raise :class:`LawError` unless the parameter and token counts are positive and finite."""
    for what, value, example in (("params", params, "200e6"), ("tokens", tokens, "20e9")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
            raise LawError(f"{what} = {value!r} must be a positive, finite count (e.g. {example})")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def load_law(path: str | Path | None = None) -> Law:
    """Load a law file; ``None`` or a shipped name (``paper-llama-c4``) loads the shipped one."""
    if path is None or (isinstance(path, str) and not path.endswith(".toml") and not Path(path).exists()):
        return shipped_law(path or DEFAULT_LAW)
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LawError(f"cannot read law file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LawError(f"{path}: malformed TOML: {exc}") from None
    return _validate(data, source=str(path))


def shipped_law(name: str = DEFAULT_LAW) -> Law:
    from gmse_cli.paths import laws_dir

    path = laws_dir() / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in laws_dir().glob("*.toml"))) or "none"
        raise LawError(f"no law file or shipped law named '{name}' (shipped: {names})")
    return load_law(path)


def _validate(data: dict[str, Any], *, source: str) -> Law:
    try:
        return Law.model_validate(data)
    except LawError as exc:
        raise LawError(f"{source}: {exc}") from None
    except ValidationError as exc:
        # A misspelt key shows up as both "missing" and "unknown"; the unknown one names the typo.
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        err = errors[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        ctx_error = (err.get("ctx") or {}).get("error")
        msg = str(ctx_error) if isinstance(ctx_error, LawError) else err.get("msg", "invalid")
        if err.get("type") == "missing":
            loc = [str(p) for p in err.get("loc", ())]
            if loc and loc[0] == "draws":
                msg = "missing (joint draws need their provenance and a [draws.constants] table)"
            elif loc and loc[-1] in ("value", "provenance"):
                msg = "missing (every constant needs a value and its provenance)"
            elif loc and loc[0] == "families":
                msg = "missing (every family curve needs L, F and C)"
            else:
                msg = "missing (every law needs A, alpha, B, beta and E)"
        elif err.get("type") == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        raise LawError(f"{source}: {where}: {msg}" if where else f"{source}: {msg}") from None


def law_to_toml(law: Law) -> str:
    """Render a law as TOML that :func:`load_law` reads back to an equal model."""
    data = law.model_dump(mode="json", exclude_none=True)
    lines = [f"name = {_q(data['name'])}"]
    if data.get("description"):
        lines.append(f"description = {_q(data['description'])}")
    if data.get("meta"):
        lines += ["", "[meta]"] + [f"{k} = {_q(v)}" for k, v in data["meta"].items()]

    def table(header: str, const: dict[str, Any]) -> None:
        lines.extend(["", f"[{header}]"])
        for key in ("value", "sigma", "low", "high"):
            if key in const:
                lines.append(f"{key} = {const[key]!r}")
        lines.append(f"provenance = {_q(const['provenance'])}")

    for key in _LAW_KEYS:
        table(key, data[key])
    for family, curve in data.get("families", {}).items():
        for key in _CURVE_KEYS:
            table(f"families.{family}.{key}", curve[key])
    if "draws" in data:
        lines += ["", "[draws]", f"provenance = {_q(data['draws']['provenance'])}", "", "[draws.constants]"]
        for name, column in data["draws"]["constants"].items():
            key = name if _BARE_KEY.fullmatch(name) else _q(name)  # "quantization.F" is one key, not a table
            values = [repr(float(x)) for x in column]
            lines.append(f"{key} = [")
            lines += ["    " + ", ".join(values[i:i + _PER_LINE]) + "," for i in range(0, len(values), _PER_LINE)]
            lines.append("]")
    return "\n".join(lines) + "\n"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PER_LINE = 8  # values per line of a draws column


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def save_law(law: Law, path: str | Path) -> None:
    """Write atomically: a crash never leaves a half-written law file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(law_to_toml(law), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise LawError(f"cannot write law file {path}: {exc.strerror or exc}") from None
