"""The loss models' fit (dense, decoupled, unified, kumar): one multistart L-BFGS on the Huber
objective, then its bootstrap, identifiability checks, capacities, held-out scores and drift
(:mod:`gmse_cli.fit.drivers` describes the models and dispatches to this)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.design import (
    DEFAULT_CURVE,
    canonical_order,
    check_runs,
    family_shapes,
    group_by_scheme,
    hold_unidentified,
    reference_scheme,
    scheme_weights,
)
from gmse_cli.fit.drift import implied_capacity, run_drift
from gmse_cli.fit.heldout import HELDOUT_METHOD, attach_heldout, score_heldout
from gmse_cli.fit.identify import identify_constants
from gmse_cli.fit.loss_refits import LossRefits
from gmse_cli.fit.objective import LossObjective
from gmse_cli.fit.params import FAMILY_KEYS, LAW, LAW_INTERNAL, internal_fixed, public_name
from gmse_cli.fit.parts import DecoupledPart, KumarPart, NoCapacity, StagePart, stage_names
from gmse_cli.fit.prior import MapObjective, PriorTerm, likelihood_scale
from gmse_cli.fit.problem import (
    Problem,
    coarse_law_grid,
    epoch_grid,
    expand_starts,
    is_converged,
    multistart,
)
from gmse_cli.fit.reports import factorization_check
from gmse_cli.fit.resampling import (
    bootstrap_columns,
    bootstrap_weights,
    constant_estimates,
    percentiles,
    refit_replicates,
)
from gmse_cli.fit.results import (
    FamilyFit,
    FitResult,
    RunResidual,
    SchemeCapacity,
)
from gmse_cli.fit.sensitivity import delta_sensitivity
from gmse_cli.fit.stages import GmseCache, run_stages, stage_structure, stage_tensors
from gmse_cli.inputs import printable_path
from gmse_cli.law.domain import DOMAIN, outside_domain
from gmse_cli.law.fitted_range import FittedRange, fitted_range_of
from gmse_cli.runs import Run
from gmse_cli.spec import Family

__all__ = ["fit_loss_model", "LossFit", "domain_mask", "heldout_fields", "DOMAIN_MODELS"]

DOMAIN_MODELS = ("unified", "capacity", "kumar")
"""The models that predict a scheme from its format: they fit only runs inside the law's domain."""


def domain_mask(runs: Sequence[Run]) -> np.ndarray:
    """True for runs inside the law's validated domain (:func:`gmse_cli.law.outside_domain`)."""
    return np.array([outside_domain(r.weight_format(), r.activation_format()) is None for r in runs], dtype=bool)


@dataclass
class LossFit:
    """A loss-model fit and what the capacity model and held-out refits build on."""

    result: FitResult
    replicates: dict[str, np.ndarray]  # scheme -> bootstrap rho draws
    problem: Problem
    starts: np.ndarray  # internal, all coordinates
    x: np.ndarray
    schemes: list[str]
    of_run: np.ndarray
    reference: int | None
    train: np.ndarray
    weights: np.ndarray | None
    refitter: LossRefits | None  # cold refits on other data weights (unified, kumar)


def fit_loss_model(runs, *, model, delta, bootstrap, seed, fixed, base_law, gmse, starts, loso, sensitivity,
                   bootstrap_starts, data_files, prior=None, profile=True, progress=False, train=None,
                   weigh_schemes=False, curve=DEFAULT_CURVE) -> LossFit:
    """The dense, decoupled, unified and kumar fits on the runs marked ``train`` (default: all)."""
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    train = np.ones(len(runs), dtype=bool) if train is None else np.asarray(train, dtype=bool)
    fitted_runs = [r for r, t in zip(runs, train, strict=True) if t]
    schemes, of_run = group_by_scheme(runs)
    # Data weights of the fit (None: every fitted run 1); refits multiply their 0/1 rows by them.
    run_weight = scheme_weights(of_run, train) if weigh_schemes else None
    W1 = run_weight if weigh_schemes else (None if train.all() else train.astype(float))
    if weigh_schemes:
        fitted_schemes = len(set(of_run[train]))
        notes.append(f"each scheme's runs weighted 1 / (its runs): the {int(train.sum())} fitted runs of "
                     f"{fitted_schemes} schemes count as {fitted_schemes} equal schemes")
    logN = np.log([r.N for r in runs])
    logD = np.log([r.D for r in runs])
    y = np.log([r.loss for r in runs])
    held: dict[int, tuple[float, str]] = {}  # internal index -> (value, where it came from)
    family_info: dict[str, int] = {}
    stages_of_run: list[list[tuple[Family, float]]] | None = None
    reference = None
    part = None

    if model == "dense":
        part = NoCapacity()
        if len(schemes) > 1:
            notes.append(f"dense fit pools {len(schemes)} schemes as if uncompressed (rho = 1)")
    elif model == "decoupled":
        reference = reference_scheme(fitted_runs, schemes, of_run[train])
        for j, s in enumerate(schemes):
            sizes = {runs[i].N for i in np.flatnonzero((of_run == j) & train)}
            if len(sizes) == 1 and j != reference:
                raise FitError(
                    f"scheme '{s}' has runs at one model size only (N = {next(iter(sizes)):.4g}); a decoupled "
                    f"capacity needs 2 or more sizes (add runs, or drop it with --where 'scheme!={s}')"
                )
        part = DecoupledPart(of_run, schemes, reference)
        for j, s in enumerate(schemes):  # schemes with no fitted run: their capacity is not fitted
            if j != reference and not np.any((of_run == j) & train):
                held[list(LAW_INTERNAL + part.names).index(f"phi:{s}")] = (0.0, "not fitted (outside the domain)")
    elif model == "kumar":
        part = KumarPart(np.array([r.w_bits for r in runs]), np.array([r.a_bits for r in runs]))
        for j, (log_gamma, why) in part.unidentified(train, fixed or {}).items():
            held[len(LAW_INTERNAL) + j] = (log_gamma, why)
            notes.append(f"{('gamma_w', 'gamma_a')[j]} {why}")
        if any(f.sparsifier is not None for r in runs for f in (r.weight_format(), r.activation_format()) if f):
            notes.append("kumar's law sees only precision: the sparsity of sparse schemes is ignored")
    else:  # unified
        gmse = gmse or GmseCache(seed=seed)
        stages_of_run = [run_stages(r, gmse) for r in runs]
        families = sorted({f.value for st, t in zip(stages_of_run, train, strict=True) if t for f, _ in st})
        if not families:
            raise FitError("a unified fit needs compressed runs (every run here is lossless)")
        missing = sorted({f.value for st in stages_of_run for f, _ in st} - set(families))
        if missing:
            raise FitError(f"runs outside the domain carry families the fitted runs lack ({', '.join(missing)}); "
                           "drop them with --where, or pass --fit-outside")
        stage_family, stage_bits, incidence = stage_structure(stages_of_run, families)
        for j, fam in enumerate(families):
            family_info[fam] = len({b for u, b in enumerate(stage_bits)
                                    if stage_family[u] == j and np.any(incidence[u, train] > 0)})
        names = list(LAW_INTERNAL + stage_names(families))
        held.update(hold_unidentified(families, family_info, incidence[:, train], stage_family, base_law, names,
                                      notes, internal_fixed(fixed, names), stage_bits))
        part = StagePart(families, stage_family, stage_bits, incidence,
                         family_shapes(families, names, held, base_law, curve))

    names = list(LAW_INTERNAL + tuple(part.names))
    user_fixed = internal_fixed(fixed, names)
    fixed_pub = {**{j: v for j, (v, _) in held.items()}, **user_fixed}
    objective = _centered_objective(logN, logD, y, part, delta, fixed_pub)
    fixed_all = _fixed_internal(objective, fixed_pub)
    problem = Problem(objective, fixed_all)
    law_free = [LAW[j] for j in range(5) if j not in fixed_all]
    check_runs(fitted_runs, model, len(problem.free), law_free=law_free)

    law_starts = (epoch_grid() if model == "dense" else coarse_law_grid()) if starts is None else np.atleast_2d(starts)
    full_starts = objective.from_public(expand_starts(model, law_starts, part, names))
    x, fval, n_starts, _ = multistart(problem, full_starts, weights=W1)
    free_problem = None
    free_residuals = (objective.predict(problem.full(x))[0] - y)[train]
    scale = likelihood_scale(free_residuals, delta)
    if prior:
        prior_term = PriorTerm(names, prior, held=list(fixed_all))
        free_problem = problem
        problem = Problem(MapObjective(objective, prior_term, scale), fixed_all)
        x, fval, n_starts, _ = multistart(problem, full_starts, weights=W1)
        used = [public_name(names[j]) for j in prior_term.index]
        notes.append(f"MAP fit: Gaussian priors on {', '.join(used) or 'nothing'} (the data's Huber objective in "
                     f"log-likelihood units: c = {scale:.4g}, from the free fit's residuals)")
    # The profile's c: its free constants off the residuals' count (likelihood_scale); a MAP
    # fit's profile keeps the c its prior is weighed with, so its objective stays one likelihood.
    profile_scale = scale if prior else likelihood_scale(free_residuals, delta, free=len(problem.free))
    theta = problem.full(x)[0]
    if not is_converged(problem, x, W1):
        raise FitError(
            f"the {model} fit did not converge (gradient still large at the best of {n_starts} starts); "
            "try --huber-delta 1 (least squares), fewer free constants, or more runs"
        )

    # -- bootstrap ---------------------------------------------------------------------------
    boot_theta = None
    failed = 0
    if bootstrap > 0:
        W = bootstrap_weights(of_run, bootstrap, rng, canonical_order(runs)) * (train if run_weight is None else run_weight)
        boot_all, ok = refit_replicates(problem, x, full_starts[:, problem.free], W, rng, per_replicate=bootstrap_starts)
        boot_theta, failed = boot_all[ok], int(bootstrap - ok.sum())
        if failed:
            notes.append(f"{failed} of {bootstrap} bootstrap refits failed and were dropped")

    constants = constant_estimates(names, objective.to_public(theta)[0],
                                   None if boot_theta is None else objective.to_public(boot_theta), fixed_all, held, user_fixed)
    # The replicates themselves, so a law written from this fit carries joint draws.
    draws = bootstrap_columns(names, None if boot_theta is None else objective.to_public(boot_theta), fixed_all)
    pred = objective.predict(theta)[0]
    logrho = objective.logrho(theta)[0]
    resid = pred - y
    constants = identify_constants(constants, problem, x, fval, objective, train, runs, logrho, profile_scale, W1, profile,
                          notes)
    law = {k: constants[k].value for k in LAW}
    implied = implied_capacity(np.exp(y), np.exp(logN), np.exp(logD), **law)
    residuals = [
        RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=float(np.exp(p)), residual=float(e),
                    rho=float(np.exp(lr)), fitted=bool(t), implied_rho=_finite(ir))
        for r, p, e, lr, t, ir in zip(runs, pred, resid, logrho, train, implied, strict=True)
    ]

    # -- capacities --------------------------------------------------------------------------
    capacities: list[SchemeCapacity] = []
    boot_logrho = objective.logrho(boot_theta) if boot_theta is not None and model != "dense" else None
    for j, s in enumerate(schemes if model != "dense" else []):
        members = np.flatnonzero(of_run == j)
        first = runs[int(members[0])]
        rho = float(np.exp(logrho[members[0]]))
        lo = hi = sig = None
        if boot_logrho is not None and j != reference:
            lo_, hi_, sig_ = percentiles(np.exp(boot_logrho[:, members[0]]))
            lo, hi, sig = float(lo_), float(hi_), float(sig_)
        capacities.append(SchemeCapacity(
            scheme=s, weights=first.weights, activations=first.activations, rho=rho, rho_low=lo, rho_high=hi,
            sigma=sig, n_runs=len(members), reference=j == reference,
            stage_gmse=[(f.value, g) for f, g in stages_of_run[members[0]]] if stages_of_run else None,
            stage_tensor=stage_tensors(first.weight_format(), first.activation_format()) if stages_of_run else None,
            fitted=bool(train[members].any()),
        ))

    families_out: dict[str, FamilyFit] = {}
    if model == "unified":
        for fam in part.families:
            families_out[fam] = FamilyFit(
                L=constants[f"{fam}.L"].value, F=constants[f"{fam}.F"].value, C=constants[f"{fam}.C"].value,
                shape=part.shapes[fam],
                held=all(constants[f"{fam}.{k}"].fixed for k in FAMILY_KEYS), n_gmse=family_info[fam],
            )

    heldout: dict = {}
    refitter = None
    if model in ("unified", "kumar"):
        refitter = LossRefits(problem, full_starts, runs, model=model, part=part if model == "unified" else None,
                              base_law=base_law, free_problem=free_problem, delta=delta, run_weight=run_weight)
    if refitter is not None and loso:
        heldout = score_heldout(runs, train, domain_mask(runs), refitter, pred, logrho, y,
                                stages_of_run or _all_stages(runs, gmse, seed), progress, curves=model == "unified")
        residuals = attach_heldout(residuals, heldout)
        notes.extend(heldout["notes"])
    elif model in ("dense", "decoupled") and loso and len(schemes) > 1:
        notes.append(f"no held-out error for a {model} fit: " + (
            "it predicts every scheme as uncompressed (rho = 1)" if model == "dense" else
            "a held-out scheme's capacity is a free constant that only its own runs can fit"))
    fact = None
    if model == "decoupled":
        fact = factorization_check(capacities)
        if sensitivity:
            capacities = delta_sensitivity(capacities, delta, problem, x, part, logN, logD, y, notes, of_run)

    replicates = {} if boot_logrho is None else {
        s: np.exp(boot_logrho[:, int(np.flatnonzero(of_run == j)[0])]) for j, s in enumerate(schemes)}
    result = FitResult(
        model=model, n_runs=len(runs), n_schemes=len(schemes), huber_delta=delta,
        **{k: constants[k].value for k in LAW},
        fit_error=float(np.sqrt(np.mean(resid[train] ** 2))), objective=float(fval), constants=constants,
        families=families_out, capacities=capacities, residuals=residuals, factorization=fact,
        bootstrap=bootstrap, bootstrap_failed=failed, starts=n_starts, converged=True, seed=seed,
        data_files=list(data_files) or sorted({printable_path(r.source) for r in runs if r.source}), notes=notes,
        n_fitted=int(train.sum()), prior=None if not prior else _describe_prior(prior),
        prior_scale=float(scale) if prior else None,
        fitted_range=_fitted_range(runs, train, data_files, stages_of_run),
        drift=None if model == "dense" else run_drift(runs, implied, logrho, train),
        **heldout_fields(heldout, model),
        draws=draws if model == "unified" else None, scheme_weighted=weigh_schemes,
    )
    return LossFit(result, replicates, problem, full_starts, x, schemes, of_run, reference, train, W1, refitter)


def _fitted_range(runs, train, data_files, stages_of_run) -> FittedRange:
    fitted = [r for r, t in zip(runs, train, strict=True) if t]
    files = ", ".join(data_files) or ", ".join(sorted({printable_path(r.source) for r in fitted if r.source})) \
        or "runs given in memory"
    stages = None if stages_of_run is None else [st for sts, t in zip(stages_of_run, train, strict=True) if t for st in sts]
    return fitted_range_of([r.N for r in fitted], [r.D for r in fitted], stages=stages,
                           provenance=f"the {len(fitted)} runs this law was fitted on ({files})")


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _describe_prior(prior: Mapping[str, tuple[float, float]]) -> str:
    return "Gaussian: " + ", ".join(f"{k} {m:g} +/- {s:g}" for k, (m, s) in prior.items())


def _all_stages(runs, gmse, seed):
    gmse = gmse or GmseCache(seed=seed)
    return [run_stages(r, gmse) for r in runs]


def heldout_fields(heldout: dict, model: str) -> dict:
    """The FitResult fields of the held-out evaluation, and the domain (for the models that have one)."""
    out = {"domain": DOMAIN} if model in DOMAIN_MODELS else {}
    if not heldout:
        return out
    s, g = heldout["reports"]["scheme"], heldout["reports"]["group"]
    n = heldout["reports"].get("scale")
    return out | {"heldout_scheme_rmse": s.rmse_inside, "heldout_group_rmse": g.rmse_inside,
                  "heldout_scale_rmse": None if n is None else n.rmse_inside,
                  "heldout_outside_rmse": s.rmse_outside, "heldout_schemes": s, "heldout_groups": g,
                  "heldout_scales": n, "heldout_method": HELDOUT_METHOD}


def _centered_objective(logN, logD, y, part, delta, fixed_pub: Mapping[int, float]) -> LossObjective:
    """Center log N unless A is held while alpha is free (centering would tie them); same for D."""
    center_n = not (0 in fixed_pub and 1 not in fixed_pub)
    center_d = not (2 in fixed_pub and 3 not in fixed_pub)
    return LossObjective(logN, logD, y, part, delta, center=(center_n, center_d))


def _fixed_internal(objective: LossObjective, fixed_pub: Mapping[int, float]) -> dict[int, float]:
    out = dict(fixed_pub)
    if 0 in out:
        out[0] = out[0] - out.get(1, 0.0) * objective.cN
    if 2 in out:
        out[2] = out[2] - out.get(3, 0.0) * objective.cD
    return out
