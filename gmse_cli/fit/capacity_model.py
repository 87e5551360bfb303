"""The two-stage ``capacity`` model: decoupled capacities, then curves through them.

Stage 1 is a decoupled fit (one free capacity per scheme, the reference pinned at 1) on the
fitted runs; stage 2 fits rho = prod over stages L_f s_f(F_f log_{1/4} GMSE)^C_f per family to
the (stage GMSEs, rho) points (Huber on rho, delta 1e-4 as the paper). Every run is then
re-predicted from the curves with the law constants of stage 1; that is the fit error, and the
held-out refits (:class:`CapacityRefits`) repeat both stages cold without each part.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.curves import fit_capacity
from gmse_cli.fit.design import DEFAULT_CURVE
from gmse_cli.fit.drift import implied_capacity, run_drift
from gmse_cli.fit.heldout import RefitRows, attach_heldout, score_heldout
from gmse_cli.fit.loss_fit import domain_mask, fit_loss_model, heldout_fields
from gmse_cli.fit.params import LAW
from gmse_cli.fit.problem import multistart_many
from gmse_cli.fit.results import CapacityPoint, FamilyFit, FitResult, RunResidual
from gmse_cli.fit.stages import GmseCache, run_stages, stage_tensors
from gmse_cli.law import capacity

__all__ = ["fit_capacity_model", "capacity_model_fit", "CapacityRefits", "curve_log_rho"]


def curve_log_rho(families: dict[str, FamilyFit], stages) -> float:
    """log rho of one run from capacity curves: the sum over its lossy stages."""
    curves = [(families[getattr(f, "value", f)], g) for f, g in stages]
    return float(sum(math.log(capacity(g, c.L, c.F, c.C, shape=c.shape)) for c, g in curves))


def _points(schemes, rho, stages_of_scheme, fitted) -> list[CapacityPoint]:
    return [CapacityPoint(name=s, stages=tuple(stages_of_scheme[s]), rho=float(rho[s]))
            for s in schemes if fitted[s] and stages_of_scheme[s]]


def fit_capacity_model(runs, **options) -> FitResult:
    """Decoupled capacities on the fitted runs, then curves through them (module docstring)."""
    return capacity_model_fit(runs, **options)[0]


def capacity_model_fit(runs, *, delta, bootstrap, seed, fixed, base_law, gmse, starts, loso, bootstrap_starts,
                       data_files, prior, profile, progress, train, capacity_delta, curve=DEFAULT_CURVE,
                       ) -> tuple[FitResult, CapacityRefits]:
    """:func:`fit_capacity_model`, and its refitter (for held-out experiments on other splits)."""
    law_fixed = {k: v for k, v in (fixed or {}).items() if k in LAW}
    cap_fixed = {k: v for k, v in (fixed or {}).items() if k not in law_fixed}
    dec_fit = fit_loss_model(runs, model="decoupled", delta=delta, bootstrap=bootstrap, seed=seed, fixed=law_fixed,
                             base_law=None, gmse=None, starts=starts, loso=False, sensitivity=False,
                             bootstrap_starts=bootstrap_starts, data_files=data_files, prior=prior, profile=profile,
                             train=train)
    dec, reps = dec_fit.result, dec_fit.replicates
    gmse = gmse or GmseCache(seed=seed)
    stages_of_run = [run_stages(r, gmse) for r in runs]
    stages = {r.scheme: st for r, st in zip(runs, stages_of_run, strict=True)}
    fitted = {c.scheme: c.fitted for c in dec.capacities}
    points = _points([c.scheme for c in dec.capacities], {c.scheme: c.rho for c in dec.capacities}, stages, fitted)
    cf = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed, curve=curve)
    constants = dict(dec.constants)
    if reps:  # bootstrap the curves through the decoupled replicates: one curve fit per replicate
        T = np.stack([reps[p.name] for p in points], axis=1)
        cfb = fit_capacity(points, huber_delta=capacity_delta, fixed=cap_fixed, base_law=base_law, seed=seed, targets=T,
                           curve=curve)
        cf = cf.model_copy(update={"constants": {k: cfb.constants[k].model_copy(update={"value": cf.constants[k].value})
                                                 for k in cf.constants}})
    constants.update(cf.constants)
    # Law predictions with the curves' capacities (the law constants from the decoupled fit).
    law = dec.law_constants()
    logrho = np.array([curve_log_rho(cf.families, st) for st in stages_of_run])
    y = np.log([r.loss for r in runs])
    N, D = np.array([r.N for r in runs]), np.array([r.D for r in runs])
    pred = np.log(law["A"] * (N * np.exp(logrho)) ** (-law["alpha"]) + law["B"] * D ** (-law["beta"]) + law["E"])
    resid = pred - y
    implied = implied_capacity(np.exp(y), N, D, **law)
    residuals = [RunResidual(scheme=r.scheme, N=r.N, D=r.D, loss=r.loss, predicted=float(np.exp(p)), residual=float(e),
                             rho=float(np.exp(lr)), fitted=bool(t), implied_rho=float(ir) if np.isfinite(ir) else None)
                 for r, p, e, lr, t, ir in zip(runs, pred, resid, logrho, train, implied, strict=True)]
    notes = dec.notes + cf.notes + [f"capacity curves: Huber delta {capacity_delta:g} on rho; the fit error "
                                    "re-predicts every fitted run from the curves"]
    if prior:
        notes.append("the prior applies to the decoupled stage's law constants; the curves are fitted without one")
    heldout: dict = {}
    refitter = CapacityRefits(dec_fit, runs, stages, base_law=base_law, capacity_delta=capacity_delta,
                              cap_fixed=cap_fixed, seed=seed, curve=curve)
    if loso:
        heldout = score_heldout(runs, train, domain_mask(runs), refitter, pred, logrho, y, stages_of_run, progress)
        residuals = attach_heldout(residuals, heldout)
        notes.extend(heldout["notes"])
    # A scheme the decoupled stage did not fit (outside the domain) has no capacity of its own there
    # (it stayed at its start, 1): report the curves' capacity, the one its runs are predicted with.
    tensors = {r.scheme: stage_tensors(r.weight_format(), r.activation_format()) for r in runs}
    caps = [c.model_copy(update={"stage_gmse": [(f.value, g) for f, g in stages[c.scheme]],
                                 "stage_tensor": tensors[c.scheme],
                                 **({} if c.fitted else {"rho": math.exp(curve_log_rho(cf.families, stages[c.scheme]))})})
            for c in dec.capacities]
    return dec.model_copy(update={
        "model": "capacity",
        "families": cf.families,
        "constants": constants,
        "capacities": caps,
        "residuals": residuals,
        "fit_error": float(np.sqrt(np.mean(resid[train] ** 2))),
        "capacity_fit_error": cf.fit_error,
        "notes": notes,
        "drift": run_drift(runs, implied, logrho, train),
        **heldout_fields(heldout, "capacity"),
    }), refitter


class CapacityRefits:
    """Cold refits of both stages of the capacity model on rows of data weights.

    A refit without the reference scheme cannot be made: the decoupled stage pins the
    reference's capacity at 1, and without its runs nothing sets the scale of the others.
    """

    def __init__(self, dec_fit, runs, stages, *, base_law, capacity_delta, cap_fixed, seed, curve):
        self.dec, self.runs, self.stages = dec_fit, runs, stages
        self.base_law, self.capacity_delta, self.cap_fixed, self.seed = base_law, capacity_delta, cap_fixed, seed
        self.curve = curve

    def refits_per_row(self) -> int:
        return 1

    def run(self, trains: np.ndarray, progress=None):
        dec = self.dec
        problem = dec.problem
        R, n = trains.shape
        names = list(problem.objective.names)
        notes = [""] * R
        pred = np.full((R, n), np.nan)
        logrho = np.full((R, n), np.nan)
        ok = np.zeros(R, dtype=bool)
        objective = np.full(R, np.nan)  # the decoupled stage's: the curve stage has its own scale
        hold = np.zeros((R, len(problem.free)), dtype=bool)
        usable = np.ones(R, dtype=bool)
        position = {j: k for k, j in enumerate(problem.free)}
        for r in range(R):
            if not np.any(trains[r] & (dec.of_run == dec.reference)):
                usable[r] = False
                notes[r] = (f"untestable: '{dec.schemes[dec.reference]}' is the reference the decoupled stage pins "
                            "at rho = 1; without its runs no capacity has a scale")
                continue
            for j, s in enumerate(dec.schemes):  # a scheme without runs in this refit: its capacity stays put
                j_phi = names.index(f"phi:{s}") if j != dec.reference else None
                if j_phi in position and not np.any(trains[r] & (dec.of_run == j)):
                    hold[r, position[j_phi]] = True
        rows = np.flatnonzero(usable)
        if rows.size == 0:
            return RefitRows(pred, logrho, ok, notes, objective)
        x, f, okr, _ = multistart_many(problem, dec.starts, trains[rows].astype(float), hold=hold[rows],
                                       values=np.zeros((len(rows), len(problem.free))), progress=progress)
        N, D = np.array([r.N for r in self.runs]), np.array([r.D for r in self.runs])
        for k, r in enumerate(rows):
            if not okr[k]:
                notes[r] = "the decoupled refit reached no finite objective"
                continue
            theta = problem.full(x[k])
            lr = problem.objective.logrho(theta)[0]
            rho = {s: float(np.exp(lr[int(np.flatnonzero(dec.of_run == j)[0])])) for j, s in enumerate(dec.schemes)}
            fitted = {s: bool(np.any(trains[r] & (dec.of_run == j))) for j, s in enumerate(dec.schemes)}
            try:
                cf = fit_capacity(_points(dec.schemes, rho, self.stages, fitted), huber_delta=self.capacity_delta,
                                  fixed=self.cap_fixed, base_law=self.base_law, seed=self.seed, curve=self.curve)
            except FitError as exc:
                notes[r] = f"untestable: {exc}"
                continue
            curves = dict(cf.families)
            for fam in {f.value for st in self.stages.values() for f, _ in st} - set(curves):
                # A family only the held-out runs carry: its curve from the base law, as a unified refit holds it.
                if self.base_law is None or fam not in {f.value for f in self.base_law.families}:
                    notes[r] = f"untestable: without these runs no run carries family '{fam}' and no base law covers it"
                    break
                c = self.base_law.curve(fam)
                curves[fam] = FamilyFit(L=c.L.value, F=c.F.value, C=c.C.value, shape=c.shape, held=True, n_gmse=0)
            if notes[r]:
                continue
            law = dict(zip(LAW, problem.objective.to_public(theta)[0][:5], strict=True))
            A, B, E = (math.exp(law[k]) for k in ("A", "B", "E"))
            logrho[r] = [curve_log_rho(curves, self.stages[run.scheme]) for run in self.runs]
            pred[r] = np.log(A * (N * np.exp(logrho[r])) ** (-law["alpha"]) + B * D ** (-law["beta"]) + E)
            ok[r] = True
            objective[r] = f[k]
        # With a prior every decoupled refit keeps the full fit's c (no free refit per row).
        scale = dec.result.prior_scale
        return RefitRows(pred, logrho, ok, notes, objective, None if scale is None else np.full(R, scale))
