"""Held-out evaluation: refit without part of the runs, predict the part left out.

A left-out group is a row of data weights that are zero on its runs, so every refit of a
batch is one row of a batched L-BFGS run (resampling's replicates work the same way).
"""

from __future__ import annotations

import numpy as np

from gmse_cli.fit.design import held_at_law
from gmse_cli.fit.optimize import batched_lbfgs
from gmse_cli.fit.params import FAMILY_KEYS
from gmse_cli.fit.results import LosoEntry
from gmse_cli.spec import Family

__all__ = ["leave_one_scheme_out"]


def leave_one_scheme_out(problem, x_full, runs, schemes, of_run, part, base_law, logrho_full) -> list[LosoEntry]:
    """Refit without each scheme (batched), predict its runs from its stages' GMSE alone.

    Each refit is a row of one batched L-BFGS run, warm-started at the full-data optimum
    ``x_full``; a family left with fewer than 3 distinct GMSE values is held at ``base_law``
    (or the scheme is reported untestable).
    """
    names = list(problem.objective.names)
    S = len(schemes)
    W = np.ones((S, len(runs)))
    mask = np.ones((S, len(problem.free)))
    x0 = np.tile(x_full, (S, 1))
    untestable: dict[int, str] = {}
    free_pos = {j: k for k, j in enumerate(problem.free)}
    for s in range(S):
        W[s, of_run == s] = 0.0
        keep = W[s] > 0
        for fj, fam in enumerate(part.families):
            idx = [names.index(f"{fam}.log{k}") for k in FAMILY_KEYS]
            if not any(i in free_pos for i in idx):
                continue
            left = {b for u, b in enumerate(part.bits) if part.fam[u] == fj and np.any(part.incidence[u, keep] > 0)}
            if len(left) >= 3:
                continue
            if base_law is not None and Family(fam) in base_law.families:
                for i, (value, _) in held_at_law(base_law, fam, names).items():
                    if i in free_pos:
                        x0[s, free_pos[i]] = value
                        mask[s, free_pos[i]] = 0.0
            else:
                untestable[s] = f"without it, family '{fam}' has {len(left)} distinct GMSE value(s): not identifiable"
    x, f, _, _ = batched_lbfgs(problem.fun(W, mask), x0)
    theta = problem.full(x)
    pred = problem.objective.predict(theta)
    lr = problem.objective.logrho(theta)
    out = []
    for s, name in enumerate(schemes):
        members = np.flatnonzero(of_run == s)
        first = int(members[0])
        if s in untestable or not np.isfinite(f[s]):
            out.append(LosoEntry(scheme=name, n_runs=len(members), rmse=None, rho_full=float(np.exp(logrho_full[first])),
                                 rho_loso=None, note=untestable.get(s, "refit failed")))
            continue
        err = pred[s, members] - problem.objective.y[members]
        out.append(LosoEntry(scheme=name, n_runs=len(members), rmse=float(np.sqrt(np.mean(err**2))),
                             rho_full=float(np.exp(logrho_full[first])), rho_loso=float(np.exp(lr[s, first]))))
    return out
