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
- ``unified``    rho = prod over lossy stages of L_f * s(F_f * log_{1/4} GMSE)^C_f, one
                 (L, F, C) per family f fitted jointly with the law (the paper's method; s is
                 erf by default, the paper's tanh with ``curve='tanh'``);
                 weights x activations and sparse+quantized formats multiply their stages;
- ``kumar``      rho = prod over {weights, activations} (1 - exp(-P_x / gamma_x)), P the bits
                 (Kumar et al. 2024);
- ``capacity``   a decoupled fit, then (L, F, C) per family fitted to its (GMSE, rho) points
                 (Huber on rho, delta 1e-4 as the paper): :mod:`gmse_cli.fit.capacity_model`.

The models that predict a scheme from its format (unified, capacity, kumar) fit only the runs
inside the law's validated domain (:func:`gmse_cli.law.outside_domain`; unless told to fit every
run) and predict the others; they are scored held out (:mod:`gmse_cli.fit.heldout`). The dense
and decoupled models cannot be: a dense fit predicts every scheme as uncompressed, and a
decoupled capacity is a free constant a held-out scheme has no runs to fit.

A MAP fit (``prior``) adds Gaussian priors on the constants (:mod:`gmse_cli.fit.prior`). After
any fit, constants at a bound are flagged and alpha and E get profile-likelihood intervals
(:mod:`gmse_cli.fit.identify`), and each run's implied capacity is checked for drift with N
and D/N (:mod:`gmse_cli.fit.drift`).

Speed comes from batching: every start of the grid (and every bootstrap replicate, and every
held-out refit) is one row of a stacked parameter matrix, and one fused objective with an
analytic gradient evaluates them all; :func:`~gmse_cli.fit.optimize.batched_lbfgs` runs L-BFGS
on all rows at once, merging rows of one problem that reach the same point. The grid stage
stops each start after a few hundred iterations, the best few distinct rows continue to
convergence, and scipy's L-BFGS-B (the reference implementation) polishes the winner on the
same objective. Internally log N and log D are centered and a decoupled capacity is
parametrized by alpha * log rho: both remove near-collinear directions that otherwise cost
L-BFGS thousands of iterations.

Identifiability is checked, not assumed: a family with fewer than 3 distinct stage GMSEs is held
at a base law's curve, and L is held at 1 when every run carries the same number of stages of
its family, or a number that follows from the other families' counts (then L and A are one
constant; of confounded families, the one whose stages reach the most bits is held, so bf16 stays
near capacity 1). Both are reported in ``notes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError, list_of
from gmse_cli.fit.design import (
    canonical_order,
    check_one_format_per_scheme,
    resolve_curve,
    validate_options,
)
from gmse_cli.fit.loss_fit import DOMAIN_MODELS, domain_mask, fit_loss_model
from gmse_cli.fit.objective import DEFAULT_CAPACITY_DELTA, DEFAULT_HUBER_DELTA
from gmse_cli.fit.prior import resolve_prior
from gmse_cli.fit.results import (
    FitModel,
    FitResult,
)
from gmse_cli.fit.spellings import pool_spellings
from gmse_cli.inputs import printable_path
from gmse_cli.limits import check_seed
from gmse_cli.runs import Run
from gmse_cli.spec import Format

__all__ = ["fit"]



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
    prior: str | Mapping[str, tuple[float, float]] | None = None,
    fit_outside: bool = False,
    weigh_schemes: bool = False,
    profile: bool = True,
    progress: bool = False,
    curve: str | None = None,
) -> FitResult:
    """Fit ``model`` (``dense``, ``decoupled``, ``unified``, ``capacity`` or ``kumar``) to
    ``runs`` (a list of :class:`~gmse_cli.runs.Run`, as :func:`~gmse_cli.runs.load_runs` gives);
    see the module docstring for the models. Returns a :class:`FitResult`: the constants with
    their intervals, capacities, fit error (RMSE of log-loss), residuals, held-out errors and
    drift (``model_dump(mode='json')`` is ``uscl fit --json``'s result).

    Raises :class:`~gmse_cli.errors.FitError` for what is no list of runs, an unknown model,
    runs too few to identify the model's constants (e.g. fewer than 3 distinct GMSEs for a
    family's curve with no ``base_law`` covering it) and settings out of range.

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
    - ``loso``: held-out evaluation (leave one scheme out, leave one GMSE group out; unified,
      capacity and kumar).
    - ``bootstrap_starts``: starts per bootstrap replicate (the full-data optimum plus random
      grid points).
    - ``prior``: 'paper' or {constant: (mean, sigma)}: a MAP fit with Gaussian priors.
    - ``fit_outside``: also fit the runs outside the law's domain (unified, capacity, kumar).
    - ``weigh_schemes``: weigh each scheme's runs by 1 / (its number of runs), in the fit, the
      bootstrap, the profiles and every held-out refit, so a scheme with many runs does not
      outweigh one with few (:func:`~gmse_cli.fit.design.scheme_weights`); not for the
      capacity model, whose decoupled stage fits each scheme's capacity on its own runs.
    - ``profile``: profile-likelihood intervals for alpha and E.
    - ``curve``: the shape s of the capacity curves fitted (unified, capacity): ``erf`` (default)
      or ``tanh`` (the paper's; the default under a prior on a curve's F or C, as the paper's is).
      A family held at a base law keeps that law's shape.
    - ``progress``: a progress bar on stderr for the held-out refits.
    """
    delta = DEFAULT_HUBER_DELTA if huber_delta is None else huber_delta
    validate_options(model, delta, bootstrap, bootstrap_starts=bootstrap_starts, capacity_delta=capacity_delta)
    delta = float(delta)
    seed = check_seed(seed)
    runs = _checked_runs(runs)
    if not runs:
        raise FitError("fit got no runs (an empty list): there is nothing to fit")
    runs, pooled = pool_spellings(runs)
    # Fit the runs in the order of what they are, not of where their files put them: every sum
    # (the objective, its gradient), every optimizer path and every first-appearance list
    # (schemes, held-out groups) then sees one order, so reordering a runs file (or the files)
    # gives the same numbers bit for bit, even where the optimum is flat.
    order = canonical_order(runs)
    given, runs = runs, [runs[i] for i in order]
    check_one_format_per_scheme(runs)
    data_files = [printable_path(f) for f in data_files]  # shown in the law and the JSON
    prior_spec = resolve_prior(prior)
    curve = resolve_curve(curve, prior_spec)
    train = domain_mask(runs) if model in DOMAIN_MODELS and not fit_outside else np.ones(len(runs), dtype=bool)
    if not train.any():
        raise FitError(f"all {len(runs)} runs quantize activations without a rotation, outside the law's validated "
                       "domain; pass --fit-outside to fit them anyway")
    outside = int((~domain_mask(runs)).sum()) if model in DOMAIN_MODELS else 0
    if weigh_schemes and model == "capacity":
        raise FitError("--weigh-schemes applies to the loss models (dense, decoupled, unified, kumar), "
                       "not to the capacity model")
    options = dict(delta=delta, bootstrap=bootstrap, seed=seed, fixed=fixed, base_law=base_law, gmse=gmse,
                   starts=starts, loso=loso, bootstrap_starts=bootstrap_starts, data_files=data_files,
                   prior=prior_spec, profile=profile, progress=progress, train=train, curve=curve)
    # Held constants at the edge of a law's domain (--fix alpha=1e30: N^-alpha underflows to 0,
    # times an infinite A) make infinite or undefined intermediate values: the result's own
    # checks (law_problem, finite JSON) name them, never a numpy warning per expression.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if model == "capacity":
            from gmse_cli.fit.capacity_model import fit_capacity_model

            result = fit_capacity_model(runs, capacity_delta=capacity_delta, **options)
        else:
            result = fit_loss_model(runs, model=model, sensitivity=sensitivity, weigh_schemes=weigh_schemes,
                                    **options).result
    result = _in_given_order(result, given, order)
    if pooled:
        result = result.model_copy(update={"notes": result.notes + pooled})
    if outside:
        what = ("fitted too (--fit-outside)" if fit_outside else
                "not fitted: predicted, and scored as heldout_outside_rmse")
        result = result.model_copy(update={"notes": result.notes + [
            f"{outside} runs quantize activations without a rotation or sparsify them, outside the law's validated "
            f"domain; {what}"]})
    return result


def _in_given_order(result: FitResult, given: Sequence[Run], order: np.ndarray) -> FitResult:
    """``result`` (fitted on ``given`` reordered by ``order``) with its per-run residuals in the
    order the runs were given, and its per-scheme lists (capacities, held-out entries, drift
    schemes) in the order their schemes first appear there: only the listing follows the file,
    never a number."""
    first: dict[str, int] = {}
    for i, run in enumerate(given):
        first.setdefault(run.scheme, i)

    def scheme_key(schemes: Sequence[str]) -> int:
        return min((first.get(s, len(given)) for s in schemes), default=len(given))

    update: dict[str, object] = {
        "capacities": sorted(result.capacities, key=lambda c: scheme_key([c.scheme])),
    }
    if len(result.residuals) == len(given):
        at = np.empty(len(order), dtype=int)
        at[order] = np.arange(len(order))  # where each given run sits in the fitted order
        update["residuals"] = [result.residuals[k] for k in at]
    for split in ("heldout_schemes", "heldout_groups", "heldout_scales"):
        report = getattr(result, split)
        if report is not None:
            entries = sorted(report.entries, key=lambda e: scheme_key(e.schemes))
            update[split] = report.model_copy(update={"entries": entries})
    if result.drift is not None:
        schemes = sorted(result.drift.schemes, key=lambda d: scheme_key([d.scheme]))
        update["drift"] = result.drift.model_copy(update={"schemes": schemes})
    return result.model_copy(update=update)


def _checked_runs(runs: object) -> list[Run]:
    """``runs`` as a list of :class:`Run`, or a FitError naming what is not one."""
    return list_of(runs, Run, FitError, "fit takes a list of Run (load_runs gives one)")
