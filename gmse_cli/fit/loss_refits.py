"""Cold refits of a loss model (unified, kumar) for held-out evaluation.

The held-out splits and their scoring live in :mod:`gmse_cli.fit.heldout`, which asks a
*refitter* for the refits; this is the loss models' refitter (the capacity model's lives with
that model, :mod:`gmse_cli.fit.capacity_model`).
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.fit.design import check_runs, family_shapes, hold_unidentified
from gmse_cli.fit.heldout import RefitRows
from gmse_cli.fit.params import LAW
from gmse_cli.fit.prior import likelihood_scale
from gmse_cli.fit.problem import multistart_many

__all__ = ["UNIDENTIFIED_RHO", "LossRefits"]

UNIDENTIFIED_RHO = 1e-6
"""A refit whose capacity for some run falls below this has run off along a flat direction
(alpha -> 0 with log rho -> -inf, alpha log rho finite): its capacities are not reported."""


class LossRefits:
    """Cold refits of a loss model (unified, kumar) on rows of data weights.

    ``problem`` is the fit's problem (a MAP objective for a prior fit, with ``free_problem`` the
    same without the prior: each prior refit takes its likelihood scale c from a free refit on
    the same runs); ``starts`` the full fit's starts (internal, all coordinates); ``run_weight``
    the full fit's data weights (None: 1 per run), which every refit's 0/1 row multiplies.
    """

    def __init__(self, problem, starts: np.ndarray, runs, *, model: str, part=None, family_info=None,
                 base_law=None, free_problem=None, delta: float = 1e-3, run_weight: np.ndarray | None = None):
        self.problem, self.starts, self.runs, self.model = problem, starts, runs, model
        self.part, self.family_info, self.base_law = part, family_info, base_law
        self.free_problem, self.delta, self.run_weight = free_problem, delta, run_weight
        self.names = list(problem.objective.names)

    def hold_for(self, train: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
        """(hold mask, values) over the free coordinates for a refit on ``train``, or why it cannot be made."""
        problem = self.problem
        F = len(problem.free)
        hold, values = np.zeros(F, dtype=bool), np.zeros(F)
        law_free = [LAW[j] for j in range(5) if j not in problem.fixed]
        if not np.any(train):
            return "no fitted run is left once it is held out (all the fitted runs are its own)"
        try:
            check_runs([r for r, t in zip(self.runs, train, strict=True) if t], self.model, F, law_free=law_free)
        except FitError as exc:
            return str(exc)
        if self.model != "unified":
            return hold, values
        part = self.part
        keep = train.astype(bool)
        n_gmse = {fam: len({b for u, b in enumerate(part.bits) if part.fam[u] == j and np.any(part.incidence[u, keep] > 0)})
                  for j, fam in enumerate(part.families)}
        try:
            held = hold_unidentified(part.families, n_gmse, part.incidence[:, keep], part.fam, self.base_law,
                                     self.names, [], problem.fixed, part.bits)
        except FitError as exc:
            return str(exc)
        for fam, shape in family_shapes(part.families, self.names, held, self.base_law, None).items():
            if shape not in (None, part.shapes[fam]):  # held at a curve of another shape: its constants would mean another curve
                return (f"without these runs the {fam} curve is held at law '{self.base_law.name}', a {shape} curve, "
                        f"where this fit's is {part.shapes[fam]} (fit --curve {shape} to test it)")
        position = {j: k for k, j in enumerate(problem.free)}
        for j, (value, _) in held.items():
            if j in position:
                hold[position[j]], values[position[j]] = True, value
        return hold, values

    def run(self, trains: np.ndarray, progress=None) -> RefitRows:
        """Cold refits on rows ``trains`` (see :class:`RefitRows`)."""
        R, n = trains.shape
        notes = [""] * R
        hold = np.zeros((R, len(self.problem.free)), dtype=bool)
        values = np.zeros_like(hold, dtype=float)
        usable = np.ones(R, dtype=bool)
        for r in range(R):
            got = self.hold_for(trains[r])
            if isinstance(got, str):
                usable[r], notes[r] = False, got
            else:
                hold[r], values[r] = got
        pred = np.full((R, n), np.nan)
        logrho = np.full((R, n), np.nan)
        ok = np.zeros(R, dtype=bool)
        objective = np.full(R, np.nan)
        rows = np.flatnonzero(usable)
        if rows.size == 0:
            return RefitRows(pred, logrho, ok, notes, objective)
        W = trains[rows].astype(float)
        if self.run_weight is not None:
            W = W * self.run_weight
        extra = {}
        scale = None
        if self.free_problem is not None:  # each prior refit's c from a free refit on the same runs
            xf, _, okf, _ = multistart_many(self.free_problem, self.starts, W, hold=hold[rows], values=values[rows],
                                            progress=progress)
            theta_f = self.free_problem.full(np.where(okf[:, None], xf, 0.0))
            resid = self.free_problem.objective.predict(theta_f) - self.free_problem.objective.y
            extra["scale"] = np.array([likelihood_scale(resid[k, W[k] > 0], self.delta) for k in range(len(rows))])
            scale = np.full(R, np.nan)
            scale[rows] = extra["scale"]
        x, f, okr, _ = multistart_many(self.problem, self.starts, W, hold=hold[rows], values=values[rows],
                                       extra=extra, progress=progress)
        objective[rows] = np.where(okr, f, np.nan)
        theta = self.problem.full(np.where(okr[:, None], x, 0.0))
        pred[rows] = self.problem.objective.predict(theta)
        logrho[rows] = self.problem.objective.logrho(theta)
        ok[rows] = okr
        for k, r in enumerate(rows):
            if not okr[k]:
                notes[r] = "the refit reached no finite objective"
            elif np.min(logrho[r]) < math.log(UNIDENTIFIED_RHO):
                notes[r] = self.unidentified_note(theta[k], float(np.min(logrho[r])))
                logrho[r] = np.nan  # not a capacity anyone should read; the predictions still are
        return RefitRows(pred, logrho, ok, notes, objective, scale)

    def unidentified_note(self, theta: np.ndarray, min_logrho: float) -> str:
        """Why a refit's capacities are not reported: the constants that ran off along a flat direction."""
        extreme = [f"{name[:-5]}.{name[-1]} = {math.exp(theta[j]):.3g}" for j, name in enumerate(self.names)
                   if name.endswith((".logC", ".logF")) and abs(theta[j]) > math.log(1e3)]
        return (f"capacities not identified (alpha = {theta[1]:.3g}, " + "".join(f"{e}, " for e in extreme)
                + f"log rho down to {min_logrho:.0f}: alpha and the capacity curve trade off along a flat "
                  "direction); its predictions are scored")

    def refits_per_row(self) -> int:
        return 2 if self.free_problem is not None else 1
