"""What a fit's checks return: held-out errors, capacity drift and the factorization check.

Frozen models with named, documented fields, each a part of :class:`~gmse_cli.fit.results.FitResult`
(``uscl fit --json``) that its own check (:mod:`~gmse_cli.fit.heldout`, :mod:`~gmse_cli.fit.drift`,
:mod:`~gmse_cli.fit.reports`) builds. Every name here is public and re-exported by
:mod:`gmse_cli.fit`, which lists them in its ``__all__``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gmse_cli.frozen import Frozen

__all__ = ["HeldoutEntry", "LosoEntry", "HeldoutReport", "DriftSlope", "DriftScheme", "DriftReport",
           "FactorizationCell", "FactorizationCheck"]


class HeldoutEntry(Frozen):
    """One held-out part (a scheme, or a group of schemes sharing their stage GMSEs) and its error."""

    name: str = Field(description="the scheme, or the group's schemes joined by ' | '")
    schemes: list[str]
    n_runs: int
    inside: bool = Field(description="inside the law's domain (else: activations quantized without rotation)")
    rmse: float | None = Field(description="RMSE of log(predicted) - log(observed) over its runs (None: untested)")
    bias: float | None = Field(description="mean of log(predicted) - log(observed) over its runs")
    rho_full: float | None = Field(default=None, description="its capacity under the full fit (first scheme)")
    rho_heldout: float | None = Field(default=None, description="its capacity under the held-out refit")
    refit: Literal["cold", "full", "none"] = Field(
        description="cold: a cold refit without its runs; full: its runs were never fitted, so the full fit "
                    "predicts them; none: untested (see note)")
    note: str = ""
    objective: float | None = Field(
        default=None, description="the cold refit's minimized objective on its own runs, defined as the fit's "
                                  "objective (capacity model: its decoupled stage's); None unless refit is cold")
    prior_scale: float | None = Field(
        default=None, description="a MAP refit's likelihood scale c, from a free refit on the same runs; None "
                                  "without a prior or unless refit is cold")


LosoEntry = HeldoutEntry  # its earlier name (leave-one-scheme-out entries)


class HeldoutReport(Frozen):
    """Every run predicted without its own part (scheme, GMSE group, or the largest model sizes) in the fit's data."""

    split: Literal["scheme", "group", "scale"]
    entries: list[HeldoutEntry]
    rmse_inside: float | None = Field(description="RMSE over the tested runs inside the law's domain")
    rmse_inside_low: float | None = Field(
        default=None, description="95% interval of rmse_inside over the split's parts: the percentile interval of "
                                  "the pooled RMSE when the parts (schemes, groups), each with its runs, are drawn "
                                  "again with replacement; None: fewer than 3 parts")
    rmse_inside_high: float | None = None
    n_inside: int
    rmse_outside: float | None = Field(description="RMSE over the tested runs outside the law's domain")
    n_outside: int
    refits: int = Field(description="cold refits made (parts whose runs were fitted)")
    n_cut: float | None = Field(
        default=None, description="scale split: every run with N at or above this was left out of its one refit")


class DriftSlope(Frozen):
    """A within-scheme slope of log(implied rho / law rho) on one regressor, with its interval."""

    regressor: Literal["log N", "log D/N"]
    slope: float
    low: float = Field(description="95% interval, lower end (t distribution)")
    high: float
    stderr: float


class DriftScheme(Frozen):
    """One scheme's own drift: log(implied rho / its rho) on log N (and log D/N where it varies)."""

    scheme: str
    n_runs: int
    log_ratio_mean: float = Field(description="mean of log(implied rho / fitted rho): the scheme's offset")
    slope_log_n: float | None = Field(description="None: fewer than 3 model sizes")
    low: float | None = Field(description="95% interval of slope_log_n (t distribution); None with no residual dof")
    high: float | None


class DriftReport(Frozen):
    """Does a run's implied capacity drift with model size or tokens per parameter?

    y_i = log(implied rho_i) - log(rho of its scheme under the fit), regressed on log N_i and
    log(D_i / N_i) jointly by least squares with one intercept per scheme (so only the drift
    within a scheme counts), over the fitted runs of compressed schemes whose implied rho exists.
    """

    n_runs: int
    n_schemes: int
    skipped: int = Field(description="runs left out: uncompressed, or no capacity reproduces their loss")
    slopes: list[DriftSlope]
    residual_rms: float = Field(description="RMS of y after the regression")
    schemes: list[DriftScheme] = Field(default_factory=list, description="each scheme's own regression")


class FactorizationCell(Frozen):
    """One weights x activations scheme: its fitted capacity against the product of its factors."""

    weights: str = Field(description="weight format")
    activations: str = Field(description="activation format")
    # Capacities are never negative; the error, a difference of two of them, may be.
    rho: float = Field(ge=0.0, description="fitted capacity of the weights x activations scheme")
    rho_weights: float = Field(ge=0.0, description="the weights-only scheme's capacity (1 for the reference format)")
    rho_activations: float = Field(ge=0.0, description="the activations-only scheme's capacity, else see tied")
    product: float = Field(ge=0.0, description="rho_weights * rho_activations: the factorized prediction")
    error: float = Field(description="rho - product")
    tied: bool = Field(description="activation factor read from the same format applied to weights")


class FactorizationCheck(Frozen):
    """Does rho(W, A) = rho(W) * rho(A)? (the paper reports errors around 1e-2)."""

    cells: list[FactorizationCell]
    rms_error: float | None
    max_abs_error: float | None
    rank1_rms: float | None = Field(description="RMS residual of the best rank-1 fit to the W x A grid")
    rank1_dof: int = Field(description="grid cells minus rank-1 parameters (<= 0: not testable)")
    note: str = ""
