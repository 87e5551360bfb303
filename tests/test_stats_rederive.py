"""``uscl fit --json``'s statistical reporting re-derived by a second implementation
(tests/stats_rederive.py: numpy + scipy, no gmse_cli.fit): the profile-likelihood intervals of
alpha and E, the ``--prior paper`` MAP objective and its likelihood scale c, and the drift report.

The profile check: at each reported end v of a 95% profile interval, our own refit of every other
free constant with the constant held at v gives the statistic 2 c (f_prof(v) - f_min), which must
be the chi-square(1) 0.95 quantile 3.841 (a crossing), c = (runs inside delta - p) / sum clip(r)^2
over the free fit's residuals (a MAP fit: its prior's c, every run counted). Before the fix the
upper end of alpha's interval sat where the statistic is 0.80 on QuEST's runs (0.0657, the true
crossing 0.0732), 0.54 on the CPU sweep (0.0668, the true crossing 0.1657) and 0.17 under QuEST's
MAP fit (0.0656, the true crossing 0.0765): with E at its bound 0,
the refits never moved log E off it (its gradient E df/dE vanishes), so the interval was the one
with E held at 0.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import stats_rederive as sr
from conftest import REPO_ROOT

CHI2 = 3.841458820694124


def _fit(*args: str) -> dict:
    from gmse_cli.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), \
            pytest.raises(SystemExit) as done:
        main(["fit", *args, "--model", "unified", "--json", "--no-heldout"])
    assert done.value.code in (0, None)
    return json.loads(out.getvalue())["results"][0]


@pytest.fixture(scope="module")
def quest(shared_data) -> dict:
    return _fit(str(shared_data / "quest_runs.json"))


@pytest.fixture(scope="module")
def quest_prior(shared_data) -> dict:
    return _fit(str(shared_data / "quest_runs.json"), "--prior", "paper")


@pytest.fixture(scope="module")
def cpu() -> dict:
    return _fit(str(REPO_ROOT / "examples" / "cpu-law.jsonl"))


def _free_fit(res):
    d = sr.data_from_result(res)
    m = sr.Model(d, res["huber_delta"])
    x0 = sr.start_from_result(m, res)
    x0[m.free.index("E")] = max(x0[m.free.index("E")], 0.0)
    x, f = m.minimize(x0)
    return d, m, x, f


def _stat_at(m, x_hat, f_hat, key, v, c, prior=None, pc=None):
    """2 c (f_prof(v) - f_min): the other free constants refitted (ours) with ``key`` held at v."""
    j = m.free.index(key)
    sub = sr.Model(m.d, m.delta, {**m.fixed, key: v}, prior_names=m.prior_names)
    base = np.delete(x_hat, j)
    starts = [base]
    if key != "E":  # a start off E's bound too: the minimum may lie away from it
        lifted = base.copy()
        lifted[sub.free.index("E")] = max(lifted[sub.free.index("E")], 0.05)
        starts.append(lifted)
    _, f = sub.minimize(np.stack(starts), prior=prior, c=pc)
    return 2.0 * c * (f - f_hat)


@pytest.mark.parametrize("which", ["quest", "cpu"])
def test_profile_interval_ends_are_chi2_crossings(which, request):
    res = request.getfixturevalue(which)
    d, m, x, f = _free_fit(res)
    assert f == pytest.approx(res["objective"], rel=1e-6)  # the same optimum (E at 0 here, 1e-6 there)
    c = sr.likelihood_scale(m.residuals(x)[d.fitted], res["huber_delta"], len(m.free))
    alpha = res["constants"]["alpha"]
    for end in (alpha["profile_low"], alpha["profile_high"]):
        assert _stat_at(m, x, f, "alpha", end, c) == pytest.approx(CHI2, abs=0.02), (which, end)
    e_high = res["constants"]["E"]["profile_high"]
    assert res["constants"]["E"]["profile_low"] == 0.0  # open at the bound: the statistic stays below there
    assert _stat_at(m, x, f, "E", 0.0, c) < CHI2
    assert _stat_at(m, x, f, "E", e_high, c) == pytest.approx(CHI2, abs=0.02)


def test_prior_map_objective_scale_and_profile(quest_prior):
    res = quest_prior
    d, m, x, f = _free_fit(res)
    c0 = sr.likelihood_scale(m.residuals(x)[d.fitted], res["huber_delta"], 0)
    assert res["prior_scale"] == pytest.approx(c0, rel=1e-5)
    x0 = sr.start_from_result(m, res)
    x0[m.free.index("E")] = max(x0[m.free.index("E")], 0.0)
    xm, fm = m.minimize(np.vstack([x, x0]), prior=sr.PAPER_PRIOR, c=c0)
    assert res["objective"] == pytest.approx(fm, rel=1e-6)
    # the reported constants are our MAP optimum
    for k, j in (("alpha", "alpha"), ("beta", "beta")):
        assert res[k] == pytest.approx(xm[m.free.index(j)], rel=1e-5)
    assert res["constants"]["quantization.F"]["value"] == pytest.approx(np.exp(xm[m.free.index("quantization.logF")]),
                                                                       rel=1e-5)
    alpha = res["constants"]["alpha"]
    for end in (alpha["profile_low"], alpha["profile_high"]):
        assert _stat_at(m, xm, fm, "alpha", end, c0, prior=sr.PAPER_PRIOR, pc=c0) == pytest.approx(CHI2, abs=0.02)
    e_high = res["constants"]["E"]["profile_high"]
    assert _stat_at(m, xm, fm, "E", e_high, c0, prior=sr.PAPER_PRIOR, pc=c0) == pytest.approx(CHI2, abs=0.02)


@pytest.mark.parametrize("which", ["quest", "cpu"])
def test_drift_report(which, request):
    res = request.getfixturevalue(which)
    rows = res["residuals"]
    loss, N, D = (np.array([r[k] for r in rows]) for k in ("loss", "params", "tokens"))
    imp = sr.implied_capacity(loss, N, D, **{k: res[k] for k in sr.LAWKEYS})
    np.testing.assert_allclose(imp, [np.nan if r["implied_rho"] is None else r["implied_rho"] for r in rows],
                               rtol=1e-12)
    sch = np.array([r["scheme"] for r in rows])
    use = np.array([r["fitted"] for r in rows]) & ~np.isin(sch, list(sr.DENSE)) & np.isfinite(imp)
    y = np.log(imp[use] / np.array([r["rho"] for r in rows])[use])
    slopes, rms, _ = sr.drift(sch[use], np.log(N[use]), np.log(D[use] / N[use]), y)
    dr = res["drift"]
    assert dr["n_runs"] == use.sum() and dr["skipped"] == len(rows) - use.sum()
    assert [s["regressor"] for s in dr["slopes"]] == list(slopes)
    for s in dr["slopes"]:
        assert (s["slope"], s["slope_low"], s["slope_high"], s["slope_std_err"]) == pytest.approx(
            slopes[s["regressor"]], rel=1e-9, abs=1e-12)
    assert dr["residual_rms"] == pytest.approx(rms, rel=1e-9)
    for e in dr["schemes"]:
        m = sch[use] == e["scheme"]
        got = sr.scheme_slope(np.log(N[use][m]), np.log(D[use][m] / N[use][m]), y[m])
        if got is None:
            assert e["slope_log_n"] is None
            continue
        assert e["slope_log_n"] == pytest.approx(got[0], rel=1e-9, abs=1e-12)
        if got[1] is None:
            assert e["slope_log_n_low"] is None
        else:
            assert (e["slope_log_n_low"], e["slope_log_n_high"]) == pytest.approx(got[1:], rel=1e-8, abs=1e-10)
