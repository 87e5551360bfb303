"""The law as data: constants with their provenance, capacity curves, joint draws, and the two
closed-form laws they parametrize.

    rho(GMSE) = L * s(F * log_{1/4}(GMSE))^C               (one L, F, C per family)
    Loss(N, D) = A * (N * rho)^(-alpha) + B * D^(-beta) + E

The curve's shape s is the paper's tanh, or erf (:data:`CURVE_SHAPES`): erf saturates faster in
bits, and fitted to QuEST's runs it predicts held-out schemes better (README, "How far to trust a
prediction").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from gmse_cli.errors import LawError
from gmse_cli.frozen import Frozen
from gmse_cli.law.fitted_range import FittedRange
from gmse_cli.schema.versions import LAW_SCHEMA_VERSION
from gmse_cli.spec import Family

__all__ = ["CURVE_SHAPES", "CurveShape", "MAX_CONSTANT", "MAX_L", "Constant", "FamilyCurve", "LawDraws", "Law", "effective_bits", "capacity", "predicted_loss",
           "draws_in_domain", "L_ceiling", "number_array", "curve_shape"]


CurveShape = Literal["tanh", "erf"]
CURVE_SHAPES: tuple[str, ...] = ("tanh", "erf")
"""The shapes a capacity curve may take: rho = L * s(F * bits)^C with s = tanh (the paper's) or erf."""


MAX_CONSTANT = 1e30
"""The largest magnitude a law constant (value, sigma, interval end) may have: beyond it a
prediction overflows to inf (a capacity L of 1e308 times N parameters)."""


MAX_L = 2.0
"""The capacity ceiling a law file's L may set: rho = L at GMSE 0, and no format is worth more than
twice the uncompressed model's parameters. Fits give 1.0-1.03 (QuEST's runs: 1.026; a fit with bf16
taken as lossless: 1.03); an L of 98.5 is a percentage written for a fraction."""


class Constant(Frozen):
    """One fitted constant with its uncertainty and where it came from."""

    value: float
    sigma: float | None = Field(default=None, ge=0, description="1-sigma uncertainty")
    low: float | None = Field(default=None, description="lower end of its interval (e.g. bootstrap 95%)")
    high: float | None = Field(default=None, description="upper end of its interval")
    provenance: str = Field(min_length=1, description="where the number came from")

    @model_validator(mode="after")
    def _check(self) -> Constant:
        for key in ("value", "sigma", "low", "high"):
            number = getattr(self, key)
            if number is not None and not (math.isfinite(number) and abs(number) <= MAX_CONSTANT):
                raise LawError(f"constant {key} = {number} is not a finite number of magnitude at most {MAX_CONSTANT:g}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise LawError(f"constant interval [{self.low}, {self.high}] is reversed")
        # An interval that leaves out its own value is a file edited by hand or mislabelled
        # (intervals are drawn around the value: uncertainty.Interval contains it).
        if (self.low is not None and self.value < self.low) or (self.high is not None and self.value > self.high):
            raise LawError(f"constant value = {self.value} lies outside its own interval "
                           f"[{self.low if self.low is not None else '-inf'}, {self.high if self.high is not None else 'inf'}]")
        return self


class FamilyCurve(Frozen):
    """The capacity curve rho = L * s(F * log_{1/4} GMSE)^C of one family, s its ``shape``."""

    L: Constant
    F: Constant
    C: Constant
    shape: CurveShape = Field(default="tanh", description="s: tanh (the paper's curve) or erf")

    @model_validator(mode="after")
    def _check(self) -> FamilyCurve:
        for key in ("L", "F", "C"):
            if getattr(self, key).value <= 0:
                raise LawError(f"capacity constant {key} = {getattr(self, key).value} must be positive")
        if self.L.value > MAX_L:
            raise LawError(f"capacity constant L = {self.L.value:g} is above {MAX_L:g}, the capacity ceiling a law "
                           "holds (rho = L at GMSE 0; L is a fraction of the uncompressed model's parameters)")
        return self

    def rho(self, gmse: np.ndarray | float) -> np.ndarray | float:
        return capacity(gmse, self.L.value, self.F.value, self.C.value, shape=self.shape)


_LAW_KEYS = ("A", "alpha", "B", "beta", "E")
_CURVE_KEYS = ("L", "F", "C")


def L_ceiling(value: float) -> float:
    """The largest draw of a capacity curve's L whose point value is ``value``: 1 (a compressed
    model never has more capacity than its dense self) where the value respects that, else
    MAX_L. A fit that put L above 1 did not hold it to 1, so its replicates are not held either:
    capped at the value itself, QuEST's fit (L 1.026) kept 178 of 300 replicates, every one at or
    below the point, which then sat at the top of every interval (int4's 50% rho interval
    [0.810, 0.824] ended at its point 0.824)."""
    return 1.0 if value <= 1.0 else MAX_L


def draws_in_domain(name: str, column, value: float):
    """Which draws of constant ``name`` (its point value ``value``) a law accepts: E at least 0,
    every other constant positive, a capacity curve's L at most :func:`L_ceiling` of its value,
    and every one finite and at most MAX_CONSTANT (a replicate that ran off to 1e39 is no draw
    of a law)."""
    column = np.asarray(column, dtype=float)
    ok = (column >= 0 if name == "E" else column > 0) & (column <= MAX_CONSTANT)
    if name.endswith(".L"):
        ok &= column <= L_ceiling(value)
    return ok


class LawDraws(Frozen):
    """Joint draws of a law's constants: element i of every column belongs to draw i.

    Columns are named as ``uscl fit --fix`` names constants: ``A``, ``alpha``, ``B``, ``beta``,
    ``E``, ``<family>.L`` / ``.F`` / ``.C``. A constant without a column is drawn from its
    marginal (see :mod:`gmse_cli.law.uncertainty`).
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
            if not all(math.isfinite(x) and abs(x) <= MAX_CONSTANT for x in column):
                raise LawError(f"column '{name}' has a value that is not finite or of magnitude over {MAX_CONSTANT:g}")
        return self

    @property
    def rows(self) -> int:
        return len(next(iter(self.constants.values())))

    def resample(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``size`` rows drawn with replacement, as one array per column."""
        pick = rng.integers(0, self.rows, size=size)
        return {name: np.asarray(column, dtype=float)[pick] for name, column in self.constants.items()}


class Law(Frozen):
    """A scaling law with per-family capacity curves, and optionally joint draws of its constants."""

    schema_version: Literal[1] = Field(
        default=LAW_SCHEMA_VERSION, description="the law file's layout; a file without it is version 1")
    name: str
    description: str = ""
    meta: dict[str, str] = Field(default_factory=dict)
    A: Constant
    alpha: Constant
    B: Constant
    beta: Constant
    E: Constant
    families: dict[Family, FamilyCurve] = Field(default_factory=dict)
    fitted_range: FittedRange | None = Field(
        default=None, description="N and D/N of the runs the constants were fitted on, if recorded")
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
        # The domain the marginal draws are truncated to (gmse_cli.law.uncertainty).
        known = self.constants()
        for name, column in draws.constants.items():
            if name not in known:
                raise LawError(
                    f"law '{self.name}': draws column '{name}' is not a constant of this law "
                    f"(known: {', '.join(known)})"
                )
            if draws_in_domain(name, column, known[name].value).all():
                continue
            lowest, highest = min(column), max(column)
            if name == "E" and lowest < 0:
                raise LawError(f"law '{self.name}': draws of E reach {lowest}; E must not be negative")
            if name != "E" and lowest <= 0:
                raise LawError(f"law '{self.name}': draws of {name} reach {lowest}; {name} must be positive")
            if name.endswith(".L") and highest > (ceiling := L_ceiling(known[name].value)):
                raise LawError(
                    f"law '{self.name}': draws of {name} reach {highest}; L may not exceed {ceiling:g} "
                    "(1 for an L of at most 1, else the ceiling a law file holds)"
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

    def beyond_fitted(self, params: float, tokens: float) -> str | None:
        """How (N, D) lies beyond the runs this law was fitted on; None within them or unrecorded."""
        return None if self.fitted_range is None else self.fitted_range.beyond(params, tokens)

    @property
    def fitted_gmse_recorded(self) -> bool:
        """Whether the law records the stage GMSEs its curves were fitted at (``[fitted_range.gmse]``):
        without them no capacity can be flagged as read beyond them (a hand-written law)."""
        return self.fitted_range is not None and self.fitted_range.gmse is not None

    def beyond_fitted_gmse(self, stages: Iterable[tuple[Family, float]]) -> str | None:
        """Why a capacity read at these (family, error) stages lies beyond the fitted stages."""
        return None if self.fitted_range is None else self.fitted_range.beyond_gmse(stages, rho=self.rho)

    def loss(self, params: np.ndarray | float, tokens: np.ndarray | float, rho: np.ndarray | float = 1.0):
        return predicted_loss(
            params, tokens, rho,
            A=self.A.value, alpha=self.alpha.value, B=self.B.value, beta=self.beta.value, E=self.E.value,
        )


def effective_bits(gmse: np.ndarray | float) -> np.ndarray | float:
    """log_{1/4}(GMSE): the bits a rate-distortion-optimal code would need for this error.

    GMSE = 0 (a lossless cast of the samples) gives +inf.
    """
    number_array("GMSE", gmse)  # text, None, a bool: one LawError, not numpy's TypeError
    with np.errstate(divide="ignore"):
        return 0.0 - np.log(gmse) / math.log(4.0)  # GMSE 1 is 0 bits, not -0.0


def _numbers(what: str, value, *, at_least: float = 0.0, zero: bool = True, finite: bool = True) -> np.ndarray:
    """``value`` (a number or an array of them) as floats, or a LawError naming it: every entry
    above ``at_least`` (or equal to it where ``zero``), never nan, and finite where ``finite``.
    Text and booleans are refused rather than converted, so a slip never yields a number."""
    numbers = number_array(what, value).astype(float, copy=False)
    ok = (numbers >= at_least) if zero else (numbers > at_least)  # nan fails both
    if finite:
        ok &= np.isfinite(numbers)
    if not np.all(ok):
        bad = float(numbers[~ok].flat[0]) if numbers.ndim else float(numbers)
        rule = f"{'at least' if zero else 'above'} {at_least:g}" + (" and finite" if finite else "")
        raise LawError(f"{what} = {bad!r} must be {rule}")
    return numbers


def number_array(what: str, value: object) -> np.ndarray:
    """``value`` (a number or an array of them) as an array of integers or floats, or one
    LawError naming it: text, None, booleans and ragged lists are refused, never converted."""
    try:
        numbers = np.asarray(value)
    except ValueError:  # a ragged list
        numbers = None
    if numbers is None or numbers.dtype.kind not in "iuf":
        raise LawError(f"{what} = {value!r} must be a number")
    return numbers


def capacity(gmse: np.ndarray | float, L: float, F: float, C: float, shape: str = "tanh") -> np.ndarray | float:
    """rho = L * s(F * log_{1/4}(GMSE))^C, s = tanh or erf (``shape``); GMSE >= 1 (nothing kept) gives 0.

    Raises :class:`LawError` for a GMSE that is nan, negative or not a number, for constants
    L, F, C that are not positive and finite (a curve of them would be no capacity), and for a
    shape not in :data:`CURVE_SHAPES`.
    """
    gmse = _numbers("GMSE", gmse, finite=False)
    L, F, C = (_numbers(name, v, zero=False) for name, v in (("L", L), ("F", F), ("C", C)))
    bits = np.maximum(effective_bits(gmse), 0.0)
    out = L * curve_shape(shape)(F * bits) ** C
    return float(out) if np.ndim(out) == 0 else out


def curve_shape(shape: str):
    """The function s of a capacity curve's ``shape`` (numpy's tanh or scipy's erf)."""
    if shape == "tanh":
        return np.tanh
    if shape == "erf":  # scipy only where an erf curve is read: the core imports without it
        from scipy.special import erf

        return erf
    raise LawError(f"capacity curve shape {shape!r} is not one of {', '.join(CURVE_SHAPES)}")


def predicted_loss(params, tokens, rho=1.0, *, A: float, alpha: float, B: float, beta: float, E: float):
    """Loss = A * (N * rho)^(-alpha) + B * D^(-beta) + E.

    Raises :class:`LawError` for counts N, D that are nan or not positive, a capacity rho that
    is nan, negative or infinite (rho 0 is allowed: nothing kept, an infinite loss), and
    constants no law holds (A, alpha, B, beta positive, E at least 0, all finite).
    """
    params = _numbers("params", params, zero=False, finite=False)
    tokens = _numbers("tokens", tokens, zero=False, finite=False)
    rho = _numbers("rho", rho)
    A, alpha, B, beta = (_numbers(k, v, zero=False) for k, v in (("A", A), ("alpha", alpha), ("B", B), ("beta", beta)))
    E = _numbers("E", E)
    n_eff = params * rho
    # rho = 0 (nothing kept), or a count below 1 under a huge exponent, is an infinite loss, not a warning
    with np.errstate(divide="ignore", over="ignore"):
        out = A * n_eff ** (-alpha) + B * tokens ** (-beta) + E
    return float(out) if np.ndim(out) == 0 else out

