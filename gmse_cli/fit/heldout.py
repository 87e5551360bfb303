"""Held-out evaluation: refit without part of the runs, predict the part left out.

Three splits of the runs, each scored the same way:

- ``scheme``: one part per scheme;
- ``group``: one part per GMSE group, the schemes whose lossy stages have the same (family,
  GMSE) multiset -- e.g. rotated and unrotated W2A2, which the law cannot tell apart;
- ``scale``: the runs at the largest model sizes (:func:`scale_cut`), left out together and
  predicted by one refit on the smaller models -- what a user of a scaling law does. Its
  entries break that one refit's error down by scheme.

For each part, the fit's data (the fitted runs, i.e. those inside the law's domain unless the
fit was told to fit every run) minus the part's runs is refitted **cold**: the full fit's own
procedure (:func:`~gmse_cli.fit.problem.multistart_many`: the same grid of starts, the same
finalists, scipy's polish), never started from the full fit's optimum, whose position the
held-out runs helped decide. Constants the full fit held stay held; a family the remaining
runs cannot identify (fewer than 3 distinct GMSE values) is held at the base law's curve, and
L at 1 where it becomes confounded with A, exactly as the full fit would decide on those runs.
In the scheme and group splits, a part none of whose runs were fitted (outside the domain) is
predicted by the full fit itself; the scale split's one refit predicts every run it left out.

Every run then has a held-out residual, log(predicted) - log(observed), from the refit that
excluded its part; a report gives each part's RMSE and bias (mean residual) and the RMSE pooled
over all tested runs inside the domain and, separately, outside it. The pooled RMSE inside the
domain carries a 95% interval from drawing the parts again with replacement
(:func:`parts_interval`): with a dozen schemes, which ones happened to be there to hold out
moves the figure by as much as any change to the law.

A left-out part is a row of data weights that are zero on its runs, so every refit is a row of
one batched L-BFGS run (resampling's replicates work the same way). Model-specific refitting
lives in a *refitter*: :class:`~gmse_cli.fit.loss_refits.LossRefits` for the loss models (unified,
kumar); the capacity model's lives with that model (:mod:`gmse_cli.fit.capacity_model`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gmse_cli.fit.design import group_by_scheme
from gmse_cli.fit.evidence import HeldoutEntry, HeldoutReport
from gmse_cli.fit.results import RunResidual

__all__ = ["HELDOUT_METHOD", "LOSSLESS_NOTE", "group_labels", "flag_lossless_parts", "scale_cut", "Split", "RefitRows",
           "heldout_reports", "parts_interval", "score_heldout", "attach_heldout"]

HELDOUT_METHOD = (
    "Held-out residual of a run = log(predicted loss) - log(observed loss), predicted by a cold refit on the "
    "fitted runs minus every run of the run's part (scheme split: its scheme; group split: all schemes with the "
    "same multiset of (family, stage GMSE); scale split: every run at the largest model sizes, N >= "
    "heldout_scales.n_cut, left out together -- the largest third of the fitted runs' distinct N, rounded down, "
    "at least one, keeping at least 3 smaller sizes, else no scale split -- and predicted by one refit on the "
    "smaller models). A cold refit repeats the full fit's procedure from the same grid of "
    "starts (never from the full fit's optimum): batched L-BFGS from every start, the 4 best distinct end points "
    "continued, scipy L-BFGS-B polishing the best. Constants held in the full fit stay held; a family left with "
    "fewer than 3 distinct GMSE values is held at the base law, and L at 1 where confounded with A. In the scheme and "
    "group splits, a part none of whose runs were fitted (outside the law's domain) is predicted by the full fit; "
    "the scale split's refit predicts every run at the largest sizes, outside the domain too. heldout_scheme_rmse and "
    "heldout_group_rmse (and heldout_scale_rmse): RMSE of the held-out residuals over every tested run inside "
    "the domain; heldout_outside_rmse: the same over the runs outside it (scheme split). Each split's "
    "rmse_inside_low/rmse_inside_high: the 2.5% and 97.5% quantiles of the pooled inside RMSE over 4000 draws (seed "
    "0) of the split's parts with replacement, each part with all its inside runs (none with fewer than 3 parts). "
    "Per-run residuals: "
    "residuals[].heldout_scheme, .heldout_group and .heldout_scale. Objective minimized (the fit's objective; each "
    "cold refit's is "
    "heldout_schemes/heldout_groups/heldout_scales entries[].objective): the sum over the fitted runs of Huber(log(predicted "
    "loss) - log(observed loss)), Huber(r) = r^2/2 for |r| <= huber_delta and huber_delta (|r| - huber_delta/2) "
    "beyond; A, B, E and each family's L, F, C are fitted through their logarithms (positive, no other bounds); "
    "predicted loss = A (N rho)^-alpha + B D^-beta + E, in the unified model rho = the product over the scheme's "
    "capacities[].stage_gmse of L s(F log_1/4 GMSE)^C with that family's constants and shape s, tanh or erf "
    "(families[].L, .F, .C, .shape). When "
    "scheme_weighted is true, the full fit and every refit weigh each fitted run's Huber term by 1/(its scheme's "
    "fitted runs), times (fitted runs)/(fitted schemes), counted over the full fit's runs; a refit keeps the "
    "remaining runs' weights. With a prior (prior: each constant's centre +/- sigma): that sum plus "
    "sum_k (v_k - centre_k)^2 / (2 sigma_k^2) / c over the prior's constants that are free, v_k in natural units "
    "(E, L, F, C, not their logarithms); c (prior_scale) = (share of the fitted runs with |r| <= huber_delta) / "
    "(mean over them of clip(r, -huber_delta, huber_delta)^2), r the unweighted residuals of the fit without the "
    "prior on the same runs, so each cold refit first refits without the prior on its runs (its c: entries[]."
    "prior_scale). Capacity model: the objective of its decoupled stage, the same sum with log rho a free "
    "constant per scheme (capacities[].rho, the reference scheme's 1) and the law constants it reports (a prior "
    "applies to alpha, beta, E only, and every refit keeps the full fit's c); its "
    "predictions (residuals[]) use the curves (families[]), fitted to the fitted schemes' (stage GMSEs, "
    "capacities[].rho) points by Huber on rho (its delta in notes), with those law constants; a cold refit "
    "repeats both stages and cannot leave out the reference scheme."
)


class RefitRows(NamedTuple):
    """What a refitter's ``run`` returns for R rows of data weights over n runs."""

    pred: np.ndarray  # (R, n) log-loss predictions (NaN: the row's refit was not made)
    logrho: np.ndarray  # (R, n) log-capacities (NaN: not made, or not identified)
    ok: np.ndarray  # (R,) whether the row's refit was made and reached a finite objective
    notes: list[str]  # (R,) why a row was not made, or what to know about its capacities
    objective: np.ndarray  # (R,) the refit's minimized objective on its own runs (NaN: not made)
    scale: np.ndarray | None = None  # (R,) a MAP refit's likelihood scale c (None: no prior)


def group_labels(stages_of_run: Sequence[Sequence[tuple[object, float]]]) -> tuple[list[tuple], np.ndarray]:
    """GMSE groups: the distinct sorted (family, GMSE) multisets, and each run's index into them."""
    keys: list[tuple] = []
    index: dict[tuple, int] = {}
    of_run = np.empty(len(stages_of_run), dtype=int)
    for i, stages in enumerate(stages_of_run):
        key = tuple(sorted((str(getattr(f, "value", f)), round(float(g), 12)) for f, g in stages))
        if key not in index:
            index[key] = len(keys)
            keys.append(key)
        of_run[i] = index[key]
    return keys, of_run


class Split(NamedTuple):
    """A split of the runs into held-out parts: each part's name, each run's part (-1: in no part) and,
    where every part leaves out the same runs (the scale split), those runs (None: each part its own)
    and the smallest N among them."""

    names: list[str]
    labels: np.ndarray
    left_out: np.ndarray | None = None
    n_cut: float | None = None


def scale_cut(model_sizes: Sequence[float], *, keep: int = 3) -> float | None:
    """The smallest N of the scale split's held-out sizes: the largest third of the distinct sizes
    (at least one), so long as ``keep`` smaller ones remain to fit A and alpha; None: too few sizes."""
    sizes = sorted({float(n) for n in model_sizes})
    held = max(1, len(sizes) // 3)
    if len(sizes) - held < keep:
        return None
    return sizes[-held]


def scale_split(N: np.ndarray, train: np.ndarray, scheme_names: list[str], of_scheme: np.ndarray) -> Split | None:
    """The scale split (:func:`scale_cut` over the fitted runs' sizes), its parts the schemes of the left-out runs."""
    cut = scale_cut(N[train])
    if cut is None:
        return None
    left_out = N >= cut
    labels = np.full(len(N), -1)
    present = sorted(set(of_scheme[left_out].tolist()))
    for k, j in enumerate(present):
        labels[left_out & (of_scheme == j)] = k
    return Split([scheme_names[j] for j in present], labels, left_out, cut)


def heldout_reports(splits: dict[str, Split], *, train: np.ndarray, inside: np.ndarray, y: np.ndarray,
                    full_pred: np.ndarray, full_logrho: np.ndarray, scheme_of_run: Sequence[str], refitter,
                    progress: bool = False) -> tuple[dict[str, HeldoutReport], dict[str, np.ndarray]]:
    """Score every split (module docstring): its report and each run's held-out residual (NaN: untested).

    ``splits`` maps a split name ('scheme', 'group', 'scale') to its :class:`Split`.
    """
    from gmse_cli.progress import task

    train = np.asarray(train, dtype=bool)
    masks: dict[bytes, int] = {}
    rows: list[np.ndarray] = []
    plan: dict[str, list[int | None]] = {}
    for split, (_, labels, left_out, _) in splits.items():
        plan[split] = []
        for part in range(labels.max() + 1):
            mask = train & (labels != part) if left_out is None else train & ~left_out
            if np.array_equal(mask, train):
                plan[split].append(None)  # nothing of it was fitted: the full fit predicts it
                continue
            key = mask.tobytes()
            if key not in masks:
                masks[key] = len(rows)
                rows.append(mask)
            plan[split].append(masks[key])
    R = len(rows)
    if R:
        with task("held-out refits", total=R * refitter.refits_per_row(), enabled=progress) as bar:
            pred, logrho, ok, notes, objective, scale = refitter.run(np.array(rows),
                                                                     progress=bar if bar.enabled else None)
    else:
        pred = logrho = np.zeros((0, len(y)))
        ok, notes, objective, scale = np.zeros(0, dtype=bool), [], np.zeros(0), None

    reports: dict[str, HeldoutReport] = {}
    residuals: dict[str, np.ndarray] = {}
    for split, (names, labels, _, n_cut) in splits.items():
        resid = np.full(len(y), np.nan)
        entries: list[HeldoutEntry] = []
        for part, row in enumerate(plan[split]):
            members = np.flatnonzero(labels == part)
            f = c = None
            if row is None:
                p, lr, status, note = full_pred, full_logrho, "full", ""
            elif ok[row]:
                p, lr, status, note = pred[row], logrho[row], "cold", notes[row]
                f = float(objective[row])
                c = None if scale is None else float(scale[row])
            else:
                p, lr, status, note = None, None, "none", notes[row]
            if p is not None:
                resid[members] = p[members] - y[members]
            for side in (True, False):  # a GMSE group may hold runs inside and outside the domain
                sel = members[inside[members] == side]
                if sel.size == 0:
                    continue
                schemes = list(dict.fromkeys(scheme_of_run[i] for i in sel))
                label = names[part] + ("" if side or split != "group" else " (outside the domain)")
                e = resid[sel]
                entries.append(HeldoutEntry(
                    name=label, schemes=schemes, n_runs=int(sel.size), inside=side,
                    rmse=None if p is None else float(np.sqrt(np.mean(e**2))),
                    bias=None if p is None else float(np.mean(e)),
                    rho_full=float(np.exp(full_logrho[sel[0]])),
                    rho_heldout=None if lr is None or not np.isfinite(lr[sel[0]]) else float(np.exp(lr[sel[0]])),
                    refit=status, note=note, objective=f, prior_scale=c,
                ))
        tested = np.isfinite(resid)
        ins, outs = tested & inside, tested & ~inside
        parts = [ins & (labels == part) for part in range(labels.max() + 1)]
        low, high = parts_interval(np.array([np.sum(resid[m] ** 2) for m in parts if m.any()]),
                                   np.array([m.sum() for m in parts if m.any()]))
        reports[split] = HeldoutReport(
            split=split, entries=entries,
            rmse_inside=float(np.sqrt(np.mean(resid[ins] ** 2))) if ins.any() else None, n_inside=int(ins.sum()),
            rmse_inside_low=low, rmse_inside_high=high,
            rmse_outside=float(np.sqrt(np.mean(resid[outs] ** 2))) if outs.any() else None,
            n_outside=int(outs.sum()), refits=len({r for r in plan[split] if r is not None}),
            n_cut=n_cut,
        )
        residuals[split] = resid
    return reports, residuals


def parts_interval(sq_sums: np.ndarray, counts: np.ndarray, *, draws: int = 4000,
                   seed: int = 0) -> tuple[float | None, float | None]:
    """The 95% percentile interval of the pooled RMSE sqrt(sum sq_sums / sum counts) when the
    parts (each a scheme or group with its runs' squared residuals ``sq_sums`` and run ``counts``)
    are drawn again with replacement: how much the held-out error owes to which few schemes were
    there to hold out. (None, None) with fewer than 3 parts."""
    k = len(counts)
    if k < 3:
        return None, None
    times = np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=draws)  # each part's draws
    pooled = np.sqrt((times @ sq_sums) / (times @ counts))
    low, high = np.quantile(pooled, [0.025, 0.975])
    return float(low), float(high)


def score_heldout(runs, train, inside, refitter, pred, logrho, y, stages_of_run, progress, *, curves: bool = True) -> dict:
    """The held-out splits for a fit's runs (:func:`heldout_reports`); ``inside``: each run inside the law's domain.

    ``curves``: capacity comes from per-family curves of GMSE (unified, capacity), so parts with only GMSE-0
    stages are flagged (:func:`flag_lossless_parts`); its notes are under ``"notes"``."""
    scheme_names, of_scheme = group_by_scheme(runs)
    keys, of_group = group_labels(stages_of_run)
    group_names = []
    for g in range(len(keys)):
        members = list(dict.fromkeys(runs[i].scheme for i in np.flatnonzero(of_group == g)))
        group_names.append(" | ".join(members))
    N = np.array([r.N for r in runs])
    splits = {"scheme": Split(scheme_names, of_scheme), "group": Split(group_names, of_group)}
    scale = scale_split(N, np.asarray(train, dtype=bool), scheme_names, of_scheme)
    if scale is not None:
        splits["scale"] = scale
    reports, resid = heldout_reports(splits, train=train, inside=inside, y=y, full_pred=pred, full_logrho=logrho,
                                     scheme_of_run=[r.scheme for r in runs], refitter=refitter, progress=progress)
    notes: list[str] = []
    if curves:
        reports, notes = flag_lossless_parts(reports, [r.scheme for r in runs], stages_of_run)
    return {"reports": reports, "residuals": resid, "notes": notes}


LOSSLESS_NOTE = (
    "capacity not identified held out: every lossy stage of its runs has GMSE 0, where the law's capacity is "
    "the family's L whatever the curve's F and C (the reference's capacity, or the curve's limit at infinite "
    "bits, which no remaining run reaches), so the refit does not predict it from a GMSE; its residual tests "
    "A, alpha, B, beta, E and the L the refit holds or extrapolates, not the capacity curve"
)


def flag_lossless_parts(reports: dict[str, HeldoutReport], scheme_of_run: Sequence[str],
                        stages_of_run: Sequence[Sequence[tuple[object, float]]]) -> tuple[dict[str, HeldoutReport], list[str]]:
    """Mark the cold-refitted scheme and group entries whose runs carry only GMSE-0 stages (:data:`LOSSLESS_NOTE`).

    Such a scheme (``sparse-0``) has capacity prod L_f under the law: s(F x infinite bits) = 1 leaves no
    GMSE for a refit without it to predict from, so its held-out error is no test of the capacity curves.
    """
    lossless: dict[str, bool] = {}
    for scheme, stages in zip(scheme_of_run, stages_of_run, strict=True):
        lossless[scheme] = lossless.get(scheme, True) and all(float(g) <= 0.0 for _, g in stages)
    flagged: list[str] = []
    out = dict(reports)
    for split in ("scheme", "group"):
        report = reports.get(split)
        if report is None:
            continue
        entries = []
        for e in report.entries:
            if e.refit == "cold" and all(lossless.get(s, False) for s in e.schemes):
                e = e.model_copy(update={"note": "; ".join(filter(None, [e.note, LOSSLESS_NOTE]))})
                flagged += [s for s in e.schemes if s not in flagged]
            entries.append(e)
        out[split] = report.model_copy(update={"entries": entries})
    notes = [f"held out: {', '.join(repr(s) for s in flagged)} {'has' if len(flagged) == 1 else 'have'} only "
             "GMSE-0 lossy stages, so the held-out refit does not identify its capacity (the law gives it the "
             "family's L whatever the curve); its held-out error tests the law's other constants, not the capacity "
             "curves (heldout_schemes.entries[].note)"] if flagged else []
    return out, notes


def attach_heldout(residuals: list[RunResidual], heldout: dict) -> list[RunResidual]:
    """Each run's residual row with its held-out residuals (None: untested in that split)."""
    split = heldout["residuals"]
    columns = zip(split["scheme"], split["group"], split.get("scale", np.full(len(residuals), np.nan)), strict=True)
    return [r.model_copy(update={"heldout_scheme": _finite_or_none(a), "heldout_group": _finite_or_none(b),
                                 "heldout_scale": _finite_or_none(c)})
            for r, (a, b, c) in zip(residuals, columns, strict=True)]


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
