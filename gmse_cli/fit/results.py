"""What a fit returns: frozen models with named, documented fields.

:class:`FitResult` is the ``uscl fit --json`` output (``model_dump(mode="json")``); its parts
(constants, capacities, curves, residuals; held-out and factorization evidence, from
:mod:`gmse_cli.fit.evidence`) are models of their own so each report can be built and tested
alone. Every name here without a leading underscore is public and re-exported by
:mod:`gmse_cli.fit`, which lists them in its ``__all__``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field, model_validator

from gmse_cli.errors import FitError
from gmse_cli.fit.evidence import DriftReport, FactorizationCheck, HeldoutReport
from gmse_cli.fit.params import FAMILY_KEYS, LAW
from gmse_cli.frozen import Frozen
from gmse_cli.law.fitted_range import FittedRange
from gmse_cli.law.model import CurveShape
from gmse_cli.spec import Family

FitModel = Literal["dense", "decoupled", "unified", "capacity", "kumar"]
MODELS: tuple[str, ...] = ("dense", "decoupled", "unified", "capacity", "kumar")


class ConstantEstimate(Frozen):
    """One fitted constant: point estimate and, after a bootstrap, its spread."""

    value: float
    sigma: float | None = Field(default=None, description="bootstrap 1-sigma (half the 15.9-84.1% range)")
    low: float | None = Field(default=None, description="bootstrap 2.5% percentile")
    high: float | None = Field(default=None, description="bootstrap 97.5% percentile")
    fixed: bool = Field(default=False, description="held, not fitted")
    source: str = Field(default="fit", description="'fit', 'fixed' (user) or where a held value came from")
    at_bound: str | None = Field(default=None, description="why the estimate sits at a bound of its domain, if it does")
    profile_low: float | None = Field(default=None, description="95% profile-likelihood interval, lower end")
    profile_high: float | None = Field(default=None, description="95% profile-likelihood interval, upper end")


class SchemeCapacity(Frozen):
    """The capacity of one scheme: fitted (decoupled) or implied by the law (unified, kumar)."""

    scheme: str
    weights: str
    activations: str | None
    rho: float
    rho_low: float | None = None
    rho_high: float | None = None
    sigma: float | None = None
    n_runs: int
    reference: bool = Field(default=False, description="pinned at rho = 1 (the uncompressed baseline)")
    stage_gmse: list[tuple[str, float]] | None = Field(default=None, description="(family, GMSE) of each lossy stage")
    stage_tensor: list[str] | None = Field(default=None, description="the tensor of each stage_gmse entry: "
                                                                     "'weights' or 'activations'")
    rho_alt_delta: float | None = Field(default=None, description="rho refitted with the other Huber delta (sensitivity)")
    fitted: bool = Field(default=True, description="its runs were fitted; False: outside the law's domain, only predicted")


class FamilyFit(Frozen):
    """A capacity curve rho = L * s(F * log_{1/4} GMSE)^C, s its shape (intervals in FitResult.constants)."""

    L: float
    F: float
    C: float
    shape: CurveShape = Field(default="tanh", description="the curve's s: tanh (the paper's) or erf")
    held: bool = Field(default=False, description="not identifiable from these runs; held at a base law")
    n_gmse: int = Field(description="distinct stage GMSE values of this family in the data")


class RunResidual(Frozen):
    """One fitted run: its scheme, N, D, observed and fitted loss, and the log residual."""

    scheme: str
    N: float
    D: float
    loss: float
    predicted: float
    residual: float = Field(description="log(predicted) - log(loss)")
    rho: float
    fitted: bool = Field(default=True, description="in the fit's data; False: outside the law's domain, only predicted")
    heldout_scheme: float | None = Field(
        default=None, description="log(predicted) - log(loss), predicted by the refit without this run's scheme")
    heldout_group: float | None = Field(
        default=None, description="log(predicted) - log(loss), predicted by the refit without this run's GMSE group")
    heldout_scale: float | None = Field(
        default=None, description="log(predicted) - log(loss), predicted by the refit on the smaller models only "
                                  "(None: the run is not at the scale split's largest sizes)")
    implied_rho: float | None = Field(
        default=None, description="the capacity that makes the fitted law reproduce this run's loss (None: none does)")

    # The shared vocabulary's names (rank, predict and train say params, tokens, predicted_loss);
    # N, D and predicted stay for readers of schema 1, which required them.
    @model_validator(mode="before")
    @classmethod
    def _drop_aliases(cls, data):
        # so that a residual's own JSON reads back; an alias that disagrees is refused
        if isinstance(data, dict):
            data = dict(data)
            for alias, key in (("params", "N"), ("tokens", "D"), ("predicted_loss", "predicted")):
                if alias not in data:
                    continue
                value = data.pop(alias)
                if data.setdefault(key, value) != value:
                    raise FitError(f"residual {alias} = {value!r} disagrees with {key} = {data[key]!r}")
        return data

    @computed_field(description="N, the run's parameters")
    @property
    def params(self) -> float:
        return self.N

    @computed_field(description="D, the run's training tokens")
    @property
    def tokens(self) -> float:
        return self.D

    @computed_field(description="the fitted law's loss for this run")
    @property
    def predicted_loss(self) -> float:
        return self.predicted


class FitResult(Frozen):
    """Everything a fit produced; ``model_dump(mode='json')`` is the ``--json`` output."""

    model: str
    n_runs: int
    n_schemes: int
    huber_delta: float
    A: float | None
    alpha: float | None
    B: float | None
    beta: float | None
    E: float | None
    fit_error: float = Field(description="RMSE of log-loss over the runs (the paper's fit error)")
    objective: float = Field(description="Huber objective at the optimum")
    constants: dict[str, ConstantEstimate]
    families: dict[str, FamilyFit]
    capacities: list[SchemeCapacity]
    residuals: list[RunResidual]
    heldout_scheme_rmse: float | None = Field(
        default=None, description="RMSE of log-loss over the held-out runs inside the domain, leaving one scheme out")
    heldout_group_rmse: float | None = Field(
        default=None, description="the same, leaving out one group of schemes that share their stage GMSEs")
    heldout_outside_rmse: float | None = Field(
        default=None, description="RMSE of log-loss over the runs outside the law's domain, predicted held out")
    heldout_scale_rmse: float | None = Field(
        default=None, description="the same over the runs at the largest model sizes, predicted by one refit on the "
                                  "smaller ones (None: fewer than 4 model sizes)")
    heldout_schemes: HeldoutReport | None = None
    heldout_groups: HeldoutReport | None = None
    heldout_scales: HeldoutReport | None = None
    heldout_method: str = Field(default="", description="exactly how the held-out numbers are made")
    domain: str = Field(default="", description="the law's validated domain; runs outside it are predicted, not fitted")
    n_fitted: int | None = Field(default=None, description="runs fitted (n_runs minus those outside the domain)")
    fitted_range: FittedRange | None = Field(
        default=None, description="N and D/N of the fitted runs: a law from this fit flags predictions beyond them")
    prior: str | None = Field(default=None, description="the Gaussian prior of a MAP fit, if any")
    prior_scale: float | None = Field(
        default=None, description="a MAP fit's likelihood scale c (heldout_method defines it); the objective is the "
                                  "Huber sum plus the prior's quadratic term divided by c")
    scheme_weighted: bool = Field(
        default=False, description="each scheme's runs weighted 1/(its runs) in the fit and every refit (--weigh-schemes)")
    drift: DriftReport | None = None
    factorization: FactorizationCheck | None = None
    capacity_fit_error: float | None = Field(default=None, description="RMSE of rho (capacity model)")
    bootstrap: int
    bootstrap_failed: int = 0
    duplicates_dropped: int = Field(
        default=0, description="exact duplicates among the runs read (uscl fit), each run fitted once: the copies dropped")
    runs_skipped: list[str] = Field(
        default_factory=list,
        description="why each run read but not fitted was skipped (diverged, unfinished, a torn last line), as warned on stderr")
    starts: int
    converged: bool
    seed: int
    data_files: list[str]
    notes: list[str]
    draws: dict[str, tuple[float, ...]] | None = Field(
        default=None, exclude=True,
        description="the bootstrap replicates by constant (the fitted law's joint draws); not printed",
    )

    def law_constants(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in LAW}

    def law_problem(self) -> str | None:
        """Why these constants cannot form a law (A, alpha, B, beta > 0, E >= 0, all finite), or None.

        Such a fit (beta < 0: loss growing with data) is no scaling law: ``uscl fit`` reports
        it as an error, with or without ``--out``, rather than print or write it."""
        from gmse_cli.law.model import MAX_CONSTANT

        for key, value in self.law_constants().items():
            if not math.isfinite(value) or value < 0 or (value == 0 and key != "E"):
                need = ">= 0" if key == "E" else "> 0"
                return (f"the fit gives {key} = {value:.4g}, but a scaling law needs {key} {need}; "
                        f"the runs do not pin it down (add runs, or hold it with --fix {key}=VALUE)")
        for key, est in self.constants.items():
            if abs(est.value) > MAX_CONSTANT:
                return (f"the fit gives {key} = {est.value:.4g}, beyond what a law file holds ({MAX_CONSTANT:g}); "
                        f"the runs do not pin it down (add runs, or hold it with --fix {key}=VALUE)")
        # The objective works in logs, so a capacity far below float's range still fits a finite
        # loss; the law (and the printed rho) would give 0 there, and an infinite loss.
        for run in self.residuals:
            if run.fitted and not run.rho > 0:
                return (f"the fit gives scheme '{run.scheme}' a capacity rho = {run.rho:.4g} (below float range), "
                        "but its runs have finite losses; the runs do not pin the constants down (add runs, or "
                        "hold constants with --fix)")
        return None

    def to_law(self, name: str, *, description: str = "", meta: Mapping[str, str] | None = None, base=None):
        """This fit as a :class:`~gmse_cli.law.Law` (with every constant's interval and origin).

        The bootstrap replicates become the law's joint draws. ``base``: a law whose capacity
        curves are copied, provenance and all, for the families these runs gave no evidence
        for (so a fit on quantized runs keeps the base law's sparsity curve). A family the base
        gives the quantization curve (VQ in the paper's law) takes the quantization curve fitted
        here, draws included."""
        from gmse_cli import __version__
        from gmse_cli.law import Constant, FamilyCurve, Law, LawDraws
        from gmse_cli.law.model import MAX_CONSTANT, MAX_L, draws_in_domain

        if self.model in ("decoupled", "kumar"):
            raise FitError(
                f"a {self.model} fit has no capacity curves to write as a law; use --model unified, "
                "or --model capacity (which fits curves to the decoupled capacities)"
            )
        files = ", ".join(Path(f).name for f in self.data_files) or "given runs"
        how = (f"uscl fit --model {self.model} on {files} ({self.n_runs} runs), Huber delta "
               f"{self.huber_delta:g}, {self.bootstrap} bootstrap refits")

        def const(key: str) -> Constant:
            est = self.constants[key]
            if est.fixed:
                origin = est.source if est.source not in ("fit", "fixed") else "held fixed in the fit"
                provenance = f"{origin}; {how}" if est.source == "fixed" else origin
            else:
                provenance = f"fitted: {how}"
            # An interval end or sigma beyond what a law holds (a bootstrap replicate that ran off
            # to 1e39) is written as open: the runs do not bound the constant on that side.
            spread = {"sigma": est.sigma, "low": est.low, "high": est.high}
            beyond = {k: v for k, v in spread.items() if v is not None and abs(v) > MAX_CONSTANT}
            if beyond:
                provenance += "; " + ", ".join(f"{k} {v:.3g} beyond {MAX_CONSTANT:g}, left open" for k, v in beyond.items())
            return Constant(value=est.value, provenance=provenance,
                            **{k: None if k in beyond else v for k, v in spread.items()})

        for fam in self.families:  # refused before anything is written: a law file is read back
            if (L := self.constants[f"{fam}.L"]).value > MAX_L:
                why = "it was held there" if L.fixed else f"the runs do not pin the {fam} curve down"
                raise FitError(f"the fit gives {fam}.L = {L.value:.4g}, above the capacity ceiling a law file holds "
                               f"({MAX_L:g}); {why} (hold it with --fix {fam}.L=1, or fit without --out)")
        families = {
            Family(fam): FamilyCurve(**{k: const(f"{fam}.{k}") for k in FAMILY_KEYS}, shape=self.families[fam].shape)
            for fam in self.families
        }
        held_from_base, copies = [], {}
        fitted = set(families)  # before any held from the base joins them
        for fam, curve in (base.families.items() if base is not None else ()):
            if fam in families:
                continue
            source = _copied_curve(base, fam)
            if source is not None and source in fitted:
                # The base law gives this family the curve of another (VQ sits on the scalar
                # quantization curve, the unified law's claim): it follows that curve as fitted here.
                copies[fam.value] = source.value
                families[fam] = FamilyCurve(**{
                    k: getattr(families[source], k).model_copy(update={
                        "provenance": f"copied from the {source.value} curve fitted here (no {fam.value} runs in "
                                      f"this fit; law '{base.name}' gives {fam.value} the {source.value} curve): "
                                      f"{getattr(families[source], k).provenance}"})
                    for k in FAMILY_KEYS
                }, shape=families[source].shape)
                continue
            held_from_base.append(fam.value)
            families[fam] = FamilyCurve(**{
                k: getattr(curve, k).model_copy(update={
                    "provenance": f"held from law '{base.name}' ("
                                  + ("a dense fit fits no capacity curve: it counts every run as uncompressed"
                                     if self.model == "dense" else f"no {fam.value} runs in this fit") + "): "
                                  f"{getattr(curve, k).provenance}"})
                for k in FAMILY_KEYS
            }, shape=curve.shape)
        draws = None
        columns = {k: v for k, v in (self.draws or {}).items() if k in LAW or k.split(".")[0] in self.families}
        if columns:
            import numpy as np

            # Replicates outside the law's domain (an L above 1) are dropped whole, keeping rows joint.
            keep = np.logical_and.reduce([draws_in_domain(k, v, self.constants[k].value) for k, v in columns.items()])
            columns.update({f"{fam}.{k}": columns[f"{source}.{k}"] for fam, source in copies.items()
                            for k in FAMILY_KEYS if f"{source}.{k}" in columns})  # the source's draws, row for row
            if keep.sum() >= 2:
                draws = LawDraws(
                    provenance=f"{int(keep.sum())} of {keep.size} bootstrap refits (the rest outside the "
                               f"law's domain) of {how}" if not keep.all() else f"{keep.size} bootstrap refits of {how}",
                    constants={k: tuple(np.asarray(v)[keep].tolist()) for k, v in columns.items()},
                )
        info = {
            "model": self.model,
            "data": files,
            "runs": str(self.n_runs),
            "huber_delta": f"{self.huber_delta:g}",
            "bootstrap": str(self.bootstrap),
            "seed": str(self.seed),
            "fit_error": f"{self.fit_error:.3e}",
            "date": _dt.date.today().isoformat(),
            "uscl_version": __version__,
        }
        if held_from_base:
            info["families_from_base"] = f"{', '.join(held_from_base)} (law '{base.name}')"
        info.update(meta or {})
        return Law(
            name=name,
            description=description or f"fitted by uscl fit --model {self.model}",
            meta=info,
            **{k: const(k) for k in LAW},
            families=families,
            fitted_range=self.fitted_range,
            draws=draws,
        )


def _copied_curve(law, family: Family) -> Family | None:
    """Quantization, where ``law`` gives ``family`` (VQ in the paper's law) the quantization curve:
    every constant's value equal."""
    source = law.families.get(Family.QUANTIZATION)
    if family == Family.QUANTIZATION or source is None:
        return None
    curve = law.families[family]
    same = all(getattr(curve, k).value == getattr(source, k).value for k in FAMILY_KEYS)
    return Family.QUANTIZATION if same else None


class CapacityPoint(Frozen):
    """A scheme's capacity and the (family, GMSE) of each of its lossy stages."""

    name: str
    stages: tuple[tuple[Family, float], ...]
    rho: float
    weight: float = 1.0


class CapacityFit(Frozen):
    """The capacity model's fit: one (L, F, C) curve per family through decoupled capacities."""

    families: dict[str, FamilyFit]
    constants: dict[str, ConstantEstimate]
    fit_error: float = Field(description="RMSE of rho over the points")
    huber_delta: float
    n_points: int
    predicted: list[float]
    bootstrap: int
    notes: list[str]
