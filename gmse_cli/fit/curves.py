"""Capacity curves: rho = prod over lossy stages of L_f s_f(F_f log_{1/4} GMSE)^C_f, s_f tanh or erf.

:func:`fit_capacity` fits one (L, F, C) per family to (stage GMSEs, rho) points (Huber on rho,
delta 1e-4 as the paper), from a grid of curve shapes; its bootstrap either resamples the
points or refits given replicates of the rho values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.design import DEFAULT_CURVE, family_shapes, held_at_law
from gmse_cli.fit.objective import DEFAULT_CAPACITY_DELTA, CapacityObjective
from gmse_cli.fit.optimize import batched_lbfgs
from gmse_cli.fit.params import FAMILY_KEYS, public_names
from gmse_cli.fit.parts import StagePart, stage_names
from gmse_cli.fit.problem import Problem
from gmse_cli.fit.resampling import bootstrap_weights, constant_estimates, refit_replicates
from gmse_cli.fit.results import CapacityFit, CapacityPoint, FamilyFit
from gmse_cli.fit.stages import stage_structure
from gmse_cli.limits import check_seed
from gmse_cli.spec import Family

__all__ = ["fit_capacity"]


def _capacity_grid(nf: int, rng: np.random.Generator, limit: int = 4000) -> np.ndarray:
    per = [np.array([math.log(L), math.log(F), math.log(C)])
           for L in (0.8, 1.0, 1.2) for F in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2) for C in (0.25, 0.5, 1.0, 2.0, 4.0)]
    per = np.array(per)
    if nf == 1:
        return per
    combos = np.array([np.concatenate(c) for c in itertools.product(per, repeat=nf)]) if len(per) ** nf <= limit * 4 \
        else np.concatenate([per[rng.integers(0, len(per), size=limit)] for _ in range(nf)], axis=1)
    if len(combos) > limit:
        combos = combos[rng.choice(len(combos), size=limit, replace=False)]
    return combos


def fit_capacity(
    points: Sequence[CapacityPoint],
    *,
    huber_delta: float = DEFAULT_CAPACITY_DELTA,
    fixed: Mapping[str, float] | None = None,
    base_law=None,
    bootstrap: int = 0,
    seed: int = 0,
    targets: np.ndarray | None = None,
    curve: str = DEFAULT_CURVE,
) -> CapacityFit:
    """Fit L, F, C per family to (stage GMSEs, rho) points: rho = prod_stages L_f s_f(F_f bits)^C_f,
    s_f the shape ``curve``, erf by default as in :func:`~gmse_cli.fit.fit` (``'tanh'`` for the
    paper's; a family held at ``base_law`` keeps that law's shape).

    ``bootstrap`` resamples the points K times; ``targets`` (K, n_points) instead refits K
    given replicates of the rho values (e.g. from a decoupled fit's bootstrap), which carries
    the capacities' own uncertainty into L, F, C.
    """
    if not (huber_delta > 0 and math.isfinite(huber_delta)):
        raise FitError(f"capacity Huber delta {huber_delta} must be a positive number")
    points = list(points)
    for p in points:
        if not (math.isfinite(p.rho) and p.rho > 0):
            raise FitError(f"capacity point '{p.name}': rho = {p.rho} must be positive")
    rng = np.random.default_rng(check_seed(seed))
    families = sorted({Family(f).value for p in points for f, _ in p.stages})
    if not families:
        raise FitError("capacity fit: no point has a lossy stage")
    stage_family, stage_bits, incidence = stage_structure([p.stages for p in points], families)
    names = list(stage_names(families))
    notes: list[str] = []
    n_gmse = {fam: len({b for b, sf in zip(stage_bits, stage_family, strict=True) if sf == j})
              for j, fam in enumerate(families)}
    held: dict[int, tuple[float, str]] = {}
    for fam in families:
        if n_gmse[fam] >= 3:
            continue
        if base_law is None or Family(fam) not in base_law.families:
            raise FitError(f"family '{fam}' has {n_gmse[fam]} distinct GMSE value(s); fitting L, F, C needs 3 or more")
        held.update(held_at_law(base_law, fam, names))
        notes.append(f"family '{fam}': too few distinct GMSE values; held at law '{base_law.name}'")
    user_fixed = {}
    for key, value in (fixed or {}).items():
        fam, _, k = key.rpartition(".")
        if f"{fam}.log{k}" not in names:
            raise FitError(f"fixed constant '{key}' is not a capacity constant here (known: {', '.join(public_names(names))})")
        if not value > 0:
            raise FitError(f"fixed constant {key} = {value} must be positive")
        user_fixed[names.index(f"{fam}.log{k}")] = math.log(value)
    fixed_all = {**{j: v for j, (v, _) in held.items()}, **user_fixed}
    part = StagePart(families, stage_family, stage_bits, incidence, family_shapes(families, names, held, base_law, curve))
    target = np.array([p.rho for p in points])
    weight = np.array([p.weight for p in points])
    objective = CapacityObjective(part, target, huber_delta)
    problem = Problem(objective, fixed_all)
    if len(points) < len(problem.free):
        raise FitError(f"a capacity fit with {len(problem.free)} free constants needs at least {len(problem.free)} points; got {len(points)}")
    grid = _capacity_grid(len(families), rng)
    x0 = np.unique(grid[:, problem.free], axis=0)
    Wg = np.broadcast_to(weight, (len(x0), len(weight)))
    x, f, _, _ = batched_lbfgs(problem.fun(Wg), x0)
    best = x[int(np.argmin(f))]
    xp, _, _ = problem.polish(best, weight)
    theta = problem.full(xp)
    boot_theta = None
    if bootstrap > 0 or targets is not None:
        if targets is not None:
            T = np.asarray(targets, dtype=float)
            Wb = np.broadcast_to(weight, T.shape).copy()
        else:
            T = np.broadcast_to(target, (bootstrap, len(points))).copy()
            Wb = bootstrap_weights(np.zeros(len(points), dtype=int), bootstrap, rng) * weight
        # The full-data optimum and two random shapes per replicate.
        boot_theta, _ = refit_replicates(problem, xp, x0, Wb, rng, per_replicate=3, target=T)
    constants = constant_estimates(names, theta[0], boot_theta, fixed_all, held, user_fixed)
    pred = objective.predict(theta)[0]
    fams = {fam: FamilyFit(L=constants[f"{fam}.L"].value, F=constants[f"{fam}.F"].value, C=constants[f"{fam}.C"].value,
                           shape=part.shapes[fam],
                           held=all(constants[f"{fam}.{k}"].fixed for k in FAMILY_KEYS), n_gmse=n_gmse[fam])
            for fam in families}
    return CapacityFit(
        families=fams, constants=constants, fit_error=float(np.sqrt(np.mean((pred - target) ** 2))),
        huber_delta=huber_delta, n_points=len(points), predicted=[float(v) for v in pred],
        bootstrap=len(boot_theta) if boot_theta is not None else 0, notes=notes,
    )
