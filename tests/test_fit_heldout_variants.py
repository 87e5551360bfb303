"""The held-out objective of ``uscl fit``'s other variants -- ``--weigh-schemes``, ``--prior paper``
and ``--model capacity`` -- re-derived from the JSON alone by the second implementation
(tests/heldout_reference.py), following ``heldout_method``'s words.

Exact (to rounding): the full fit's ``objective`` from the reported constants and runs (the
scheme weights' rule; the prior's centres and sigmas from ``prior`` and its scale c from
``prior_scale``; the capacity model's decoupled stage from ``capacities[].rho``, with or without
the prior), and the pooled
and per-scheme held-out figures from the per-run residuals. Up to the optimizers' stopping
tolerances: c as defined (from a free fit on the same runs), and cold leave-one-scheme-out refits
from our own starts, which land on uscl's optimum or below it.

To keep this quick the fits run from 9 law starts (x 9 curve shapes) instead of the CLI's 162;
on QuEST's runs that reaches the CLI's optima (objective within 2e-8, held-out RMSE within 3e-5
relative, for all three variants).
"""

from __future__ import annotations

from dataclasses import replace

import heldout_reference as ref
import numpy as np
import pytest
from test_fit_heldout_quest import assert_heldout_figures


def _fit(shared_data, **options) -> dict:
    from gmse_cli.fit import fit
    from gmse_cli.fit.problem import coarse_law_grid
    from gmse_cli.law import load_law
    from gmse_cli.runs import load_runs

    runs = load_runs([shared_data / "quest_runs.json"])
    result = fit(runs, base_law=load_law(None), profile=False, sensitivity=False, starts=coarse_law_grid()[::18],
                 **options)
    return result.model_dump(mode="json")


@pytest.fixture(scope="module")
def weighted(shared_data) -> dict:
    return _fit(shared_data, model="unified", weigh_schemes=True)


@pytest.fixture(scope="module")
def prior(shared_data) -> dict:
    return _fit(shared_data, model="unified", prior="paper")


@pytest.fixture(scope="module")
def capacity(shared_data) -> dict:
    return _fit(shared_data, model="capacity")


def _entry(result: dict, scheme: str) -> dict:
    return next(e for e in result["heldout_schemes"]["entries"] if e["name"] == scheme)


def test_weighted_objective_and_heldout_figures(weighted):
    runs, theta = ref.runs_from_json(weighted), ref.theta_from_json(weighted)
    assert weighted["scheme_weighted"] and runs.fitted.sum() == 80 and len(set(runs.scheme[runs.fitted])) == 12
    fitted = runs.take(runs.fitted)
    # 80 runs counted as 12 equal schemes: the weights sum to the fitted runs, each scheme's to 80/12
    assert fitted.weight.sum() == pytest.approx(80)
    assert {round(fitted.weight[fitted.scheme == s].sum(), 9) for s in set(fitted.scheme)} == {round(80 / 12, 9)}
    assert ref.objective(theta, fitted, weighted["huber_delta"])[0] == pytest.approx(weighted["objective"], rel=1e-12)
    np.testing.assert_allclose(ref.predict(theta, runs), [r["predicted"] for r in weighted["residuals"]], rtol=1e-12)
    assert_heldout_figures(weighted)


def test_prior_objective_scale_and_heldout_figures(prior):
    runs, theta = ref.runs_from_json(prior), ref.theta_from_json(prior)
    p, delta = ref.prior_from_json(prior), prior["huber_delta"]
    assert len(p.index) == 6  # alpha, beta, E and the quantization curve; A and B have no prior
    fitted = runs.take(runs.fitted)
    # objective = Huber sum + prior term / c (not c x the sum + the prior term: that is 1.8e6 times larger)
    assert ref.objective(theta, fitted, delta, p)[0] == pytest.approx(prior["objective"], rel=1e-12)
    # c from a free fit on the same runs, ours (its optimum within ~1e-6 of uscl's)
    assert ref.free_fit_scale(fitted, delta, n_starts=6) == pytest.approx(prior["prior_scale"], rel=1e-5)
    np.testing.assert_allclose(ref.predict(theta, runs), [r["predicted"] for r in prior["residuals"]], rtol=1e-12)
    assert_heldout_figures(prior)
    cold = [e for e in prior["heldout_schemes"]["entries"] if e["refit"] == "cold"]
    assert cold and all(e["prior_scale"] > 0 for e in cold)


@pytest.mark.parametrize(("variant", "scheme"), [("weighted", "W:had128+int1 A:had128+int1"),
                                                 ("prior", "had128+int2")])
def test_cold_leave_one_scheme_out_refit(request, variant, scheme):
    result = request.getfixturevalue(variant)
    runs, delta, entry = ref.runs_from_json(result), result["huber_delta"], _entry(result, scheme)
    p = None
    if result["prior"]:
        train = runs.take(runs.fitted & (runs.scheme != scheme))
        assert ref.free_fit_scale(train, delta, n_starts=6) == pytest.approx(entry["prior_scale"], rel=1e-5)
        p = replace(ref.prior_from_json(result), scale=entry["prior_scale"])
    theta, obj, resid = ref.leave_one_scheme_out(runs, scheme, delta, n_starts=6, prior=p)
    # The two refits reach the same optimum to within their optimizers' tolerances: ours at most
    # 1e-8 above uscl's (scipy 1.17's L-BFGS-B stops 3e-9 above it for W1A1; 1.16's landed below),
    # uscl's at most 2e-5 above ours (measured: 4e-10 and 6e-9 here)
    assert obj <= entry["objective"] * (1 + 1e-8)
    assert entry["objective"] <= obj * (1 + 2e-5)
    m = runs.scheme == scheme
    np.testing.assert_allclose(resid, np.array([r["heldout_scheme"] for r in result["residuals"]])[m], atol=1e-5)
    assert np.sqrt(np.mean(resid**2)) == pytest.approx(entry["rmse"], rel=1e-3)


def test_capacity_model_objective_predictions_and_heldout_figures(capacity):
    runs, theta = ref.runs_from_json(capacity), ref.theta_from_json(capacity)
    # the objective is the decoupled stage's (capacities[].rho per scheme) ...
    assert ref.decoupled_objective(capacity, runs) == pytest.approx(capacity["objective"], rel=1e-12)
    # ... while the predictions, the fit error and the held-out residuals use the curves
    rows = capacity["residuals"]
    np.testing.assert_allclose(ref.predict(theta, runs), [r["predicted"] for r in rows], rtol=1e-12)
    np.testing.assert_allclose(np.exp(ref.log_rho(theta, runs)), [r["rho"] for r in rows], rtol=1e-12)
    resid = np.log(ref.predict(theta, runs)) - runs.log_loss
    assert np.sqrt(np.mean(resid[runs.fitted] ** 2)) == pytest.approx(capacity["fit_error"], rel=1e-12)
    assert_heldout_figures(capacity)
    # the reference scheme (bf16) is untested and left out of the pooled figure
    assert _entry(capacity, "bf16")["refit"] == "none" and capacity["heldout_scheme_rmse"] is not None


def test_capacity_model_with_a_prior(shared_data):
    result = _fit(shared_data, model="capacity", prior="paper")
    runs = ref.runs_from_json(result)
    assert ref.decoupled_objective(result, runs) == pytest.approx(result["objective"], rel=1e-12)
    # every decoupled refit keeps the full fit's c
    cold = [e for e in result["heldout_schemes"]["entries"] if e["refit"] == "cold"]
    assert cold and all(e["prior_scale"] == result["prior_scale"] for e in cold)
