"""Fitting scaling laws to training runs.

Every loss model is the Chinchilla form with an effective parameter count::

    log Loss_i = log( A * (N_i * rho_i)^(-alpha) + B * D_i^(-beta) + E )

fitted by minimizing a Huber loss on log-loss residuals (delta 1e-3 by default, as Hoffmann et
al. 2022 and Besiroglu et al. 2024; a large delta such as 1 is least squares, what QuEST used)
with L-BFGS from a grid of starting points. A, B, E are fitted through their logarithms, so
the log-prediction is a log-sum-exp of three terms. The models differ only in rho:

- ``dense``      rho = 1;
- ``decoupled``  one free rho per scheme, the uncompressed reference (bf16) pinned at 1
                 (Frantar et al. 2025; QuEST);
- ``unified``    rho = prod over lossy stages of L_f * tanh(F_f * log_{1/4} GMSE)^C_f, one
                 (L, F, C) per family f fitted jointly with the law (the paper's method);
                 weights x activations and sparse+quantized formats multiply their stages;
- ``kumar``      rho = prod over {weights, activations} (1 - exp(-P_x / gamma_x)), P the bits
                 (Kumar et al. 2024);
- ``capacity``   a decoupled fit, then (L, F, C) per family fitted to its (GMSE, rho) points
                 (Huber on rho, delta 1e-4 as the paper).

Speed comes from batching: every start of the grid (and every bootstrap replicate, and every
leave-one-scheme-out refit) is one row of a stacked parameter matrix, and one fused objective
with an analytic gradient evaluates them all; :func:`~gmse_cli.fit.optimize.batched_lbfgs` runs
L-BFGS on all rows at once, merging rows that reach the same point. The grid stage stops each
start after a few hundred iterations, the best few distinct rows continue to convergence, and
scipy's L-BFGS-B (the reference implementation) polishes the winner on the same objective. Internally log N and
log D are centered and a decoupled capacity is parametrized by alpha * log rho: both remove
near-collinear directions that otherwise cost L-BFGS thousands of iterations.

Identifiability is checked, not assumed: a family with fewer than 3 distinct stage GMSEs is held
at a base law's curve, and L is held at 1 when every run carries the same number of stages of
its family (then L and A are one constant). Both are reported in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.curves import fit_capacity
from gmse_cli.fit.design import (
    check_runs,
    group_by_scheme,
    hold_unidentified,
    reference_scheme,
    validate_options,
)
from gmse_cli.fit.heldout import leave_one_scheme_out
from gmse_cli.fit.objective import DEFAULT_CAPACITY_DELTA, DEFAULT_HUBER_DELTA, LossObjective
from gmse_cli.fit.optimize import batched_lbfgs
from gmse_cli.fit.params import FAMILY_KEYS, LAW, LAW_INTERNAL, internal_fixed
from gmse_cli.fit.parts import DecoupledPart, KumarPart, NoCapacity, StagePart
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
    CapacityPoint,
    FamilyFit,
    FitModel,
    FitResult,
    RunResidual,
    SchemeCapacity,
)
from gmse_cli.fit.stages import GmseCache, run_stages, stage_structure
from gmse_cli.runs import Run
from gmse_cli.spec import Family, Format

__all__ = ["fit", "fit_loss_model"]


def fit(
    runs: Sequence[Run],
    *,
    model: FitModel = "dense",
    huber_delta: float | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    fixed: Mapping[str, float] | None = None,
    base_law=None,
    gmse: Callable[[Format], float] | None = None,
    starts: np.ndarray | None = None,
    loso: bool = True,
    sensitivity: bool = True,
    capacity_delta: float = DEFAULT_CAPACITY_DELTA,
    bootstrap_starts: int = 2,
    data_files: Sequence[str] = (),
) -> FitResult:
    """Fit ``model`` to ``runs``; see the module docstring for the models.

    - ``huber_delta``: Huber threshold on log-loss residuals (default 1e-3).
    - ``bootstrap``: K refits on runs resampled within each scheme; every constant (and every
      decoupled capacity) gets a 95% percentile interval and a 1-sigma.
    - ``fixed``: constants held at given values, by public name: ``A``, ``alpha``, ``B``,
      ``beta``, ``E``, ``quantization.L`` ..., ``gamma_w``, ``gamma_a``.
    - ``base_law``: a :class:`~gmse_cli.law.Law` whose capacity curves are used for families the
      runs cannot identify (fewer than 3 distinct GMSE values).
    - ``gmse``: stage GMSE provider (default: a :class:`GmseCache` on the GMSE engine).
    - ``starts``: (S, 5) law starts in (log A, alpha, log B, beta, log E); default: Epoch's grid
      (4,500 points) for dense fits, a 162-point grid otherwise (times capacity-parameter starts).
    - ``bootstrap_starts``: starts per bootstrap replicate (the full-data optimum plus random
      grid points).
    """
    delta = DEFAULT_HUBER_DELTA if huber_delta is None else float(huber_delta)
    validate_options(model, delta, bootstrap)
    if model == "capacity":
        return _fit_capacity_model(list(runs), delta=delta, bootstrap=bootstrap, seed=seed, fixed=fixed,
                                   base_law=base_law, gmse=gmse, starts=starts, capacity_delta=capacity_delta,
                                   data_files=data_files, bootstrap_starts=bootstrap_starts)
    return fit_loss_model(list(runs), model=model, delta=delta, bootstrap=bootstrap, seed=seed, fixed=fixed,
                          base_law=base_law, gmse=gmse, starts=starts, loso=loso, sensitivity=sensitivity,
                          bootstrap_starts=bootstrap_starts, data_files=data_files)[0]


def fit_loss_model(runs, *, model, delta, bootstrap, seed, fixed, base_law, gmse, starts, loso, sensitivity,
                   bootstrap_starts, data_files) -> tuple[FitResult, dict[str, np.ndarray]]:
    """The dense, decoupled, unified and kumar fits; also returns each scheme's bootstrap rho."""
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    schemes, of_run = group_by_scheme(runs)
    logN = np.log([r.N for r in runs])
    logD = np.log([r.D for r in runs])
    y = np.log([r.loss for r in runs])
    held: dict[int, tuple[float, str]] = {}  # internal index -> (value, where it came from)
    family_info: dict[str, int] = {}
    stages_of_run: list[list[tuple[Family, float]]] | None = None
    reference = None

    if model == "dense":
        part = NoCapacity()
        if len(schemes) > 1:
            notes.append(f"dense fit pools {len(schemes)} schemes as if uncompressed (rho = 1)")
    elif model == "decoupled":
        reference = reference_scheme(runs, schemes, of_run)
        for j, s in enumerate(schemes):
            sizes = {runs[i].N for i in np.flatnonzero(of_run == j)}
            if len(sizes) < 2 and j != reference:
                raise FitError(
                    f"scheme '{s}' has runs at one model size only (N = {next(iter(sizes)):.4g}); a decoupled "
                    f"capacity needs 2 or more sizes (add runs, or drop it with --where 'scheme!={s}')"
                )
        part = DecoupledPart(of_run, schemes, reference)
    elif model == "kumar":
        part = KumarPart(np.array([r.w_bits for r in runs]), np.array([r.a_bits for r in runs]))
        if any(f.sparsifier is not None for r in runs for f in (r.weight_format(), r.activation_format()) if f):
            notes.append("kumar's law sees only precision: the sparsity of sparse schemes is ignored")
    else:  # unified
        gmse = gmse or GmseCache(seed=seed)
        stages_of_run = [run_stages(r, gmse) for r in runs]
        families = sorted({f.value for st in stages_of_run for f, _ in st})
        if not families:
            raise FitError("a unified fit needs compressed runs (every run here is lossless)")
        stage_family, stage_bits, incidence = stage_structure(stages_of_run, families)
        part = StagePart(families, stage_family, stage_bits, incidence)
        for j, fam in enumerate(families):
            family_info[fam] = len({b for b, sf in zip(stage_bits, stage_family, strict=True) if sf == j})
        names = list(LAW_INTERNAL + part.names)
        held.update(hold_unidentified(families, family_info, incidence, stage_family, base_law, names, notes,
                                      internal_fixed(fixed, names)))

    names = list(LAW_INTERNAL + tuple(part.names))
    user_fixed = internal_fixed(fixed, names)
    fixed_pub = {**{j: v for j, (v, _) in held.items()}, **user_fixed}
    objective = _centered_objective(logN, logD, y, part, delta, fixed_pub)
    fixed_all = _fixed_internal(objective, fixed_pub)
    problem = Problem(objective, fixed_all)
    law_free = [LAW[j] for j in range(5) if j not in fixed_all]
    check_runs(runs, model, len(problem.free), law_free=law_free)

    law_starts = (epoch_grid() if model == "dense" else coarse_law_grid()) if starts is None else np.atleast_2d(starts)
    full_starts = objective.from_public(expand_starts(model, law_starts, part, names))
    x, fval, n_starts, ok = multistart(problem, full_starts)
    theta = problem.full(x)[0]
    converged = is_converged(problem, x)
    if not converged:
        raise FitError(
            f"the {model} fit did not converge (gradient still large at the best of {n_starts} starts); "
            "try --huber-delta 1 (least squares), fewer free constants, or more runs"
        )

    # -- bootstrap ---------------------------------------------------------------------------
    boot_theta = None
    failed = 0
    if bootstrap > 0:
        W = bootstrap_weights(of_run, bootstrap, rng)
        boot_all, ok = refit_replicates(problem, x, full_starts[:, problem.free], W, rng, per_replicate=bootstrap_starts)
        boot_theta, failed = boot_all[ok], int(bootstrap - ok.sum())
        if failed:
            notes.append(f"{failed} of {bootstrap} bootstrap refits failed and were dropped")

    constants = constant_estimates(names, objective.to_public(theta)[0],
                                   None if boot_theta is None else objective.to_public(boot_theta), fixed_all, held, user_fixed)
    # The replicates themselves, so a law written from this fit carries joint draws.
    draws = bootstrap_columns(names, None if boot_theta is None else objective.to_public(boot_theta), fixed_all)
    if 4 not in fixed_all and constants["E"].value < 1e-6 * float(np.exp(y).min()):
        notes.append(f"E went to its lower bound 0 (E = {constants['E'].value:.2g}): these runs do not identify an "
                     "irreducible loss, and E's interval means nothing; consider --fix E=VALUE")
    pred = objective.predict(theta)[0]
    logrho = objective.logrho(theta)[0]
    resid = pred - y
    fit_error = float(np.sqrt(np.mean(resid**2)))
    residuals = [
        RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=float(np.exp(p)), residual=float(e),
                    rho=float(np.exp(lr)))
        for r, p, e, lr in zip(runs, pred, resid, logrho, strict=True)
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
        ))

    families_out: dict[str, FamilyFit] = {}
    if model == "unified":
        for fam in part.families:
            families_out[fam] = FamilyFit(
                L=constants[f"{fam}.L"].value, F=constants[f"{fam}.F"].value, C=constants[f"{fam}.C"].value,
                held=all(constants[f"{fam}.{k}"].fixed for k in FAMILY_KEYS), n_gmse=family_info[fam],
            )

    loso_out = None
    if model == "unified" and loso:
        loso_out = leave_one_scheme_out(problem, x, runs, schemes, of_run, part, base_law, logrho)
    fact = None
    if model == "decoupled":
        fact = factorization_check(capacities)
        if sensitivity:
            capacities = _delta_sensitivity(runs, capacities, delta, problem, x, part, logN, logD, y, notes,
                                            reference, of_run)

    replicates = {} if boot_logrho is None else {
        s: np.exp(boot_logrho[:, int(np.flatnonzero(of_run == j)[0])]) for j, s in enumerate(schemes)}
    result = FitResult(
        model=model, n_runs=len(runs), n_schemes=len(schemes), huber_delta=delta,
        **{k: constants[k].value for k in LAW},
        fit_error=fit_error, objective=float(fval), constants=constants, families=families_out,
        capacities=capacities, residuals=residuals, loso=loso_out, factorization=fact,
        bootstrap=bootstrap, bootstrap_failed=failed, starts=n_starts, converged=converged, seed=seed,
        data_files=list(data_files) or sorted({r.source for r in runs if r.source}), notes=notes,
        draws=draws if model == "unified" else None,
    )
    return result, replicates


def _fit_capacity_model(runs, *, delta, bootstrap, seed, fixed, base_law, gmse, starts, capacity_delta,
                        data_files, bootstrap_starts) -> FitResult:
    """Decoupled capacities, then curves through them; the law re-predicts runs from the curves."""
    law_fixed = {k: v for k, v in (fixed or {}).items() if k in LAW}
    cap_fixed = {k: v for k, v in (fixed or {}).items() if k not in law_fixed}
    dec, reps = fit_loss_model(runs, model="decoupled", delta=delta, bootstrap=bootstrap, seed=seed,
                               fixed=law_fixed, base_law=None, gmse=None, starts=starts, loso=False,
                               sensitivity=False, bootstrap_starts=bootstrap_starts, data_files=data_files)
    gmse = gmse or GmseCache(seed=seed)
    by_scheme = {r.scheme: r for r in runs}
    points, stages = [], {}
    for cap in dec.capacities:
        st = tuple(run_stages(by_scheme[cap.scheme], gmse))
        stages[cap.scheme] = st
        if st:
            points.append(CapacityPoint(name=cap.scheme, stages=st, rho=cap.rho))
    cf = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed)
    constants = dict(dec.constants)
    if reps:  # bootstrap the curves through the decoupled replicates: one curve fit per replicate
        order = [p.name for p in points]
        T = np.stack([reps[name] for name in order], axis=1)
        cfb = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed, targets=T)
        cf = cf.model_copy(update={"constants": {k: cfb.constants[k].model_copy(update={"value": cf.constants[k].value})
                                                 for k in cf.constants}})
    constants.update(cf.constants)
    # Law predictions with the curves' capacities (the law constants from the decoupled fit).
    rho_of = dict(zip([p.name for p in points], cf.predicted, strict=True))
    law = dec.law_constants()
    resid, residuals = [], []
    for r in runs:
        rho = rho_of.get(r.scheme, 1.0)
        p = law["A"] * (r.N * rho) ** (-law["alpha"]) + law["B"] * r.D ** (-law["beta"]) + law["E"]
        e = math.log(p) - math.log(r.loss)
        resid.append(e)
        residuals.append(RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=p, residual=e, rho=rho))
    caps = [c.model_copy(update={"stage_gmse": [(f.value, g) for f, g in stages[c.scheme]]}) for c in dec.capacities]
    return dec.model_copy(update={
        "model": "capacity",
        "families": cf.families,
        "constants": constants,
        "capacities": caps,
        "residuals": residuals,
        "fit_error": float(np.sqrt(np.mean(np.square(resid)))),
        "capacity_fit_error": cf.fit_error,
        "notes": dec.notes + cf.notes + [f"capacity curves: Huber delta {capacity_delta:g} on rho; the fit "
                                         "error re-predicts every run from the curves"],
    })


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


def _delta_sensitivity(runs, capacities, delta, problem, x, part, logN, logD, y, notes, reference, of_run):
    """Refit the decoupled capacities with the other Huber regime (least squares <-> robust)."""
    other = 1.0 if delta < 0.1 else DEFAULT_HUBER_DELTA
    center = (problem.objective.cN != 0.0, problem.objective.cD != 0.0)
    alt = Problem(LossObjective(logN, logD, y, part, other, center=center), problem.fixed)
    xa, _, _, _ = batched_lbfgs(alt.fun(), x[None, :])
    xa_best, _, _ = alt.polish(xa[0])
    lr = alt.objective.logrho(alt.full(xa_best))[0]
    out, shifts = [], []
    for j, cap in enumerate(capacities):
        first = int(np.flatnonzero(of_run == j)[0])
        rho_alt = float(np.exp(lr[first]))
        shifts.append((abs(rho_alt - cap.rho), cap.scheme))
        out.append(cap.model_copy(update={"rho_alt_delta": rho_alt}))
    worst, scheme = max(shifts)
    width = [c.rho_high - c.rho_low for c in capacities if c.rho_low is not None and c.rho_high is not None]
    msg = (f"capacities move with the Huber delta: refitted at delta {other:g}, '{scheme}' shifts by "
           f"{worst:.3f}")
    if width:
        msg += f" (median 95% bootstrap interval width {float(np.median(width)):.3f})"
    msg += "; capacity is weakly identified when alpha is small"
    notes.append(msg)
    return out
