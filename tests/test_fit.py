"""Fitting: the optimizer against scipy, published fits, QuEST evidence, synthetic recovery.

Reference numbers and where they come from:

- Besiroglu et al. 2024 ("Chinchilla scaling: a replication attempt", arXiv 2404.10102): their
  dense fit of the Epoch-extracted Chinchilla points (Huber delta 1e-3 on log-loss, L-BFGS from
  a grid, 5 worst points dropped): A = 482.01, B = 2085.43, E = 1.8172, alpha = 0.3478,
  beta = 0.3658, with bootstrap standard errors A 124.58, B 1293.23, E 0.03, alpha 0.02,
  beta 0.02 (their Table 1; the point values were cross-checked against a public reproduction,
  the standard errors are quoted from the paper).
- The paper's capacity constants and sparsity capacities (shared/reference/paper.md).
- Independent implementations written here: a numpy Huber / log-sum-exp objective and scipy's
  L-BFGS-B with finite-difference gradients.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import norm

from gmse_cli import fit as F
from gmse_cli.errors import DataError, FitError
from gmse_cli.fit import loss_fit
from gmse_cli.fit.objective import CapacityObjective, LossObjective, _law_numba, _law_numpy
from gmse_cli.fit.optimize import _two_loop, _two_loop_numba, batched_lbfgs
from gmse_cli.fit.parts import DecoupledPart, KumarPart, NoCapacity, StagePart
from gmse_cli.fit.problem import Problem
from gmse_cli.law import capacity, load_law, predicted_loss
from gmse_cli.runs import Run, exclude_worst, load_csv, load_quest_runs

BESIROGLU = {"A": (482.01, 124.58), "B": (2085.43, 1293.23), "E": (1.8172, 0.03), "alpha": (0.3478, 0.02),
             "beta": (0.3658, 0.02)}
PAPER_QUANT = {"L": (1.0, 0.7), "F": (0.41, 0.02), "C": (1.39, 0.08)}
PAPER_SPARSITY = [(0.1, 0.95), (0.2, 0.89), (0.3, 0.84), (0.4, 0.78), (0.5, 0.72),
                  (0.6, 0.64), (0.7, 0.56), (0.8, 0.47), (0.9, 0.35)]


def _reference_objective(params, N, D, loss, delta):
    """Huber(delta) on log-loss residuals, written from the formula: sum over points."""
    A, alpha, B, beta, E = params
    pred = np.log(A * N ** (-alpha) + B * D ** (-beta) + E)
    r = pred - np.log(loss)
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


# --------------------------------------------------------------------------------------------
# Building blocks against independent references
# --------------------------------------------------------------------------------------------


def test_huber_closed_form():
    r = np.array([-3.0, -1e-3, 0.0, 5e-4, 2e-3])
    np.testing.assert_allclose(F.huber(r, 1e-3), [1e-3 * (3 - 5e-4), 5e-7, 0.0, 1.25e-7, 1e-3 * 1.5e-3])


def test_law_kernel_matches_numpy_twin():
    rng = np.random.default_rng(1)
    n, k = 37, 9
    logN, logD = rng.uniform(-3, 3, n), rng.uniform(-3, 3, n)
    y = rng.uniform(0.5, 1.5, n)
    theta = np.column_stack([rng.uniform(-1, 3, k), rng.uniform(0.05, 1, k), rng.uniform(-1, 3, k),
                             rng.uniform(0.05, 1, k), rng.uniform(-1, 1, k)])
    for logrho, w in [(np.zeros((1, n)), np.ones((1, n))), (rng.normal(0, 0.3, (k, n)), rng.integers(0, 3, (k, n)) * 1.0)]:
        a = _law_numba(theta, logN, logD, y, logrho, w, 0.05)
        b = _law_numpy(theta, logN, logD, y, logrho, w, 0.05)
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)


def test_two_loop_kernel_matches_numpy_twin():
    rng = np.random.default_rng(2)
    S, m, P = 23, 10, 7
    s = rng.normal(size=(S, m, P))
    y = s + 0.1 * rng.normal(size=(S, m, P))
    rho = 1 / np.einsum("ijk,ijk->ij", s, y)
    count, head, g = rng.integers(0, m + 1, S), rng.integers(0, m, S), rng.normal(size=(S, P))
    idx = np.arange(S)
    np.testing.assert_allclose(_two_loop_numba(g, s, y, rho, count, head, idx, m),
                               _two_loop(g, s, y, rho, count, head, m), rtol=1e-12, atol=1e-13)


def _objectives():
    """One instance of each objective on small synthetic data."""
    rng = np.random.default_rng(3)
    n = 24
    logN, logD = np.log(rng.uniform(1e7, 1e9, n)), np.log(rng.uniform(1e9, 1e11, n))
    y = np.log(rng.uniform(2.5, 4.0, n))
    scheme = np.arange(n) % 4
    fam = np.array([0, 0, 1])
    bits = np.array([1.5, 3.0, 2.0])
    inc = np.zeros((3, n))
    inc[0, scheme == 1] = 1
    inc[1, scheme == 2] = 2
    inc[0, scheme == 3] = 1
    inc[2, scheme == 3] = 1
    parts = {
        "dense": (NoCapacity(), []),
        "decoupled": (DecoupledPart(scheme, ["a", "b", "c", "d"], 0), [-0.02, -0.05, -0.1]),
        "unified": (StagePart(["quantization", "sparsity"], fam, bits, inc), [-0.05, -0.9, 0.3, 0.0, -1.2, -0.7]),
        "unified-erf": (StagePart(["quantization", "sparsity"], fam, bits, inc, {"quantization": "erf"}),
                        [-0.05, -0.9, 0.3, 0.0, -1.2, -0.7]),
        "kumar": (KumarPart(np.where(scheme > 1, 4.0, 16.0), np.where(scheme == 3, 8.0, 16.0)), [0.9, 1.1]),
    }
    for name, (part, extra) in parts.items():
        obj = LossObjective(logN, logD, y, part, 2e-2)
        theta = np.array([[1.5, 0.3, 2.0, 0.25, 0.4, *extra]])
        yield name, obj, theta
    cap = CapacityObjective(StagePart(["quantization", "sparsity"], fam, bits, inc[:, :4] + np.eye(3, 4)),
                            np.array([0.9, 0.5, 0.3, 0.2]), 1e-2)
    yield "capacity", cap, np.array([[-0.05, -0.9, 0.3, 0.0, -1.2, -0.7]])
    cap_erf = CapacityObjective(StagePart(["quantization", "sparsity"], fam, bits, inc[:, :4] + np.eye(3, 4),
                                          {"quantization": "erf", "sparsity": "erf"}), np.array([0.9, 0.5, 0.3, 0.2]), 1e-2)
    yield "capacity-erf", cap_erf, np.array([[-0.05, -0.9, 0.3, 0.0, -1.2, -0.7]])


@pytest.mark.parametrize("name, obj, theta", list(_objectives()), ids=lambda v: v if isinstance(v, str) else "")
def test_analytic_gradients_match_finite_differences(name, obj, theta):
    f, g = obj.value_grad(theta)
    eps = 1e-6
    for j in range(theta.shape[1]):
        up, dn = theta.copy(), theta.copy()
        up[0, j] += eps
        dn[0, j] -= eps
        numeric = (obj.value_grad(up)[0][0] - obj.value_grad(dn)[0][0]) / (2 * eps)
        assert g[0, j] == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, j)


def test_batched_lbfgs_reaches_scipy_minimum():
    """Each row's minimum equals scipy L-BFGS-B (finite differences) from the same start."""
    obj = CapacityObjective(
        StagePart(["quantization"], np.zeros(6, dtype=int), np.linspace(0.5, 6, 6), np.eye(6)),
        capacity(4.0 ** -np.linspace(0.5, 6, 6), 0.97, 0.45, 1.3), 1.0,
    )
    problem = Problem(obj, {})
    starts = np.log([[1.0, 0.3, 1.0], [0.8, 1.0, 2.5], [1.2, 0.1, 0.5]])
    x, f, _, conv = batched_lbfgs(problem.fun(), starts)
    for row, x0 in enumerate(starts):
        ref = minimize(lambda v: obj.value_grad(v[None])[0][0] * 1e4, x0, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
        assert f[row] <= ref.fun / 1e4 + 1e-12
    np.testing.assert_allclose(np.exp(x[np.argmin(f)]), [0.97, 0.45, 1.3], rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Chinchilla: the published replication
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chinchilla(shared_data):
    runs = exclude_worst(load_csv(shared_data / "chinchilla_epoch_extracted.csv"), 5)
    return runs, F.fit(runs, model="dense")


def test_chinchilla_dense_recovers_besiroglu(chinchilla):
    runs, res = chinchilla
    assert res.n_runs == 240 and res.starts == 4500 and res.converged
    for key, (value, se) in BESIROGLU.items():
        assert abs(getattr(res, key) - value) <= se, (key, getattr(res, key), value)
    # Our optimum is at least as good as the published one on the same objective (written here).
    N, D, loss = (np.array([getattr(r, k) for r in runs]) for k in ("N", "D", "loss"))
    ours = _reference_objective([res.A, res.alpha, res.B, res.beta, res.E], N, D, loss, 1e-3)
    published = _reference_objective([BESIROGLU[k][0] for k in ("A", "alpha", "B", "beta", "E")], N, D, loss, 1e-3)
    assert ours <= published * (1 + 1e-9)
    assert res.objective == pytest.approx(ours, rel=1e-9)
    # ... and scipy with finite differences, started at the published values, goes no lower.
    x0 = np.array([math.log(482.01), 0.3478, math.log(2085.43), 0.3658, math.log(1.8172)])
    ref = minimize(lambda v: 1e3 * _reference_objective([math.exp(v[0]), v[1], math.exp(v[2]), v[3], math.exp(v[4])],
                                                        N, D, loss, 1e-3), x0, method="L-BFGS-B")
    assert ours <= ref.fun / 1e3 * (1 + 1e-7)
    assert res.fit_error == pytest.approx(math.sqrt(np.mean((np.log(
        res.A * N ** -res.alpha + res.B * D ** -res.beta + res.E) - np.log(loss)) ** 2)), rel=1e-9)


# --------------------------------------------------------------------------------------------
# QuEST: decoupled and unified
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quest(shared_data):
    return load_quest_runs(shared_data / "quest_runs.json")


@pytest.fixture(scope="module")
def decoupled(quest):
    return F.fit(quest, model="decoupled", bootstrap=40, seed=0, profile=False)  # no profile test here


def _rho(res):
    return {c.scheme: c for c in res.capacities}


def test_decoupled_capacities_rise_with_bits(decoupled):
    rho = _rho(decoupled)
    for family in (["W:int1 A:int1", "W:int2 A:int2", "W:int3 A:int3", "W:int4 A:int4", "W:int8 A:int8"],
                   [f"W:had128+int{b} A:had128+int{b}" for b in (1, 2, 3, 4, 8)],
                   [f"had128+int{b}" for b in (1, 2, 3, 4)]):
        values = [rho[s].rho for s in family]
        assert values == sorted(values), family
    assert rho["bf16"].reference and rho["bf16"].rho == 1.0


def test_weight_only_beats_weights_and_activations(decoupled):
    rho = _rho(decoupled)
    for b in (1, 2, 3, 4):
        assert rho[f"had128+int{b}"].rho > rho[f"W:had128+int{b} A:had128+int{b}"].rho


def test_factorization_on_quest(decoupled):
    fact = decoupled.factorization
    cells = {(c.weights, c.activations): c for c in fact.cells}
    assert set(cells) == {(f"had128+int{b}", f"had128+int{b}") for b in (1, 2, 3, 4)}
    rho = _rho(decoupled)
    for b in (1, 2, 3, 4):
        c = cells[(f"had128+int{b}", f"had128+int{b}")]
        assert c.product == pytest.approx(rho[f"had128+int{b}"].rho ** 2, rel=1e-12)
    # The paper reports factorization errors around 1e-2.
    assert fact.rms_error < 0.03
    assert fact.rank1_rms is None and fact.rank1_dof <= 0  # QuEST has no activation-only runs


def test_capacity_moves_with_huber_delta_and_intervals_show_it(decoupled):
    caps = [c for c in decoupled.capacities if not c.reference]
    shifts = {c.scheme: abs(c.rho_alt_delta - c.rho) for c in caps}
    worst = max(shifts, key=shifts.get)
    assert shifts[worst] > 0.01  # least squares moves capacities noticeably ...
    for c in caps:  # ... by less than the bootstrap says the data can pin them down
        assert c.rho_low <= c.rho <= c.rho_high
        assert shifts[c.scheme] <= 1.5 * (c.rho_high - c.rho_low), c.scheme
    assert any("move with the Huber delta" in n for n in decoupled.notes)


def test_simple_rank1_grid():
    """A full W x A grid that is an exact product has zero rank-1 error; a perturbed cell does not."""
    u = {"bf16": 1.0, "int4": 0.9, "int2": 0.45}
    v = {None: 1.0, "int4": 0.85, "int2": 0.5}
    caps = [F.SchemeCapacity(scheme=f"{w}/{a}", weights=w, activations=a, rho=u[w] * v[a], n_runs=2,
                             reference=(w == "bf16" and a is None)) for w in u for a in v]
    exact = F.factorization_check(caps)
    assert exact.rank1_dof == 9 - 5 and exact.rank1_rms < 1e-9
    assert exact.rms_error < 1e-12 and not any(c.tied for c in exact.cells)
    caps[4] = caps[4].model_copy(update={"rho": caps[4].rho + 0.05})
    assert F.factorization_check(caps).rank1_rms > 1e-3


@pytest.fixture(scope="module")
def unified(quest_unified_fit):
    return quest_unified_fit


def test_unified_close_to_decoupled_and_loso_for_every_scheme(unified, decoupled):
    assert unified.fit_error < 3 * decoupled.fit_error
    schemes = {r.scheme for r in unified.residuals}
    assert {e.name for e in unified.heldout_schemes.entries} == schemes
    assert all(e.rmse is not None and math.isfinite(e.rmse) for e in unified.heldout_schemes.entries)
    assert unified.families["sparsity"].held  # one sparse GMSE in QuEST: held at the shipped law


def test_unified_quantization_curve_agrees_with_the_paper(quest):
    """Fitted on QuEST's runs with the paper's tanh curve, it lands within 3 sigma of the paper's
    Llama/C4 constants."""
    res = F.fit(quest, model="unified", base_law=load_law(), curve="tanh", loso=False, profile=False)
    curve = res.families["quantization"]
    assert curve.shape == "tanh"
    for key, (value, sigma) in PAPER_QUANT.items():
        assert abs(getattr(curve, key) - value) <= 3 * sigma, key


def test_capacity_model_fits_curves_through_decoupled_points(quest):
    runs = [r for r in quest if "had128" in r.scheme or r.scheme == "bf16"]
    res = F.fit(runs, model="capacity", base_law=load_law(), bootstrap=10, seed=0, loso=False, profile=False)
    curve = res.families["quantization"]
    assert not curve.held and res.families["sparsity"].held
    for cap in res.capacities:
        if len(cap.stage_gmse) == 1:  # weights-only: rho on the curve, written out here
            g = cap.stage_gmse[0][1]
            bits = -math.log(g) / math.log(4)
            s = {"tanh": math.tanh, "erf": math.erf}[curve.shape]
            on_curve = curve.L * s(curve.F * bits) ** curve.C
            assert abs(on_curve - cap.rho) < 0.1, cap.scheme
    assert res.capacity_fit_error < 0.05
    assert res.constants["quantization.F"].low <= curve.F <= res.constants["quantization.F"].high


# --------------------------------------------------------------------------------------------
# Synthetic runs from known constants
# --------------------------------------------------------------------------------------------

TRUTH = {"A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28, "E": 1.69}
SMALL_GRID = np.array([(a, al, b, be, e) for al, be, e, a, b in
                       itertools.product([0.2, 0.5], [0.2, 0.5], [0.0, 1.0], [4.0, 8.0], [4.0, 8.0])])


def _synthetic(rng, noise, rho=None, schemes=("bf16",)):
    runs = []
    for scheme in schemes:
        for N, tpp in itertools.product(np.geomspace(3e7, 3e9, 6), (10.0, 30.0, 100.0, 300.0)):
            D = N * tpp
            r = 1.0 if rho is None else rho[scheme]
            loss = predicted_loss(N, D, r, **TRUTH) * math.exp(rng.normal(0, noise))
            w, a = (scheme.split("|") + [None])[:2]
            runs.append(Run(scheme=scheme, weights=w, activations=a, N=N, D=D, loss=loss))
    return runs


def test_synthetic_dense_recovery_and_bootstrap_coverage():
    rng = np.random.default_rng(7)
    covered = total = 0
    errors = []
    values: dict[str, list[float]] = {k: [] for k in TRUTH}
    sigmas: dict[str, list[float]] = {k: [] for k in TRUTH}
    for _ in range(10):
        res = F.fit(_synthetic(rng, 0.004), model="dense", bootstrap=50, seed=int(rng.integers(1 << 30)),
                    bootstrap_starts=1, starts=SMALL_GRID)
        for key, true in TRUTH.items():
            c = res.constants[key]
            covered += c.low <= true <= c.high
            total += 1
            errors.append(abs(c.value - true) / true)
            values[key].append(c.value)
            sigmas[key].append(c.sigma)
    assert np.median(errors) < 0.05
    # 95% intervals: 50 intervals, expect 47.5 covered; a binomial 1% lower tail is about 43.
    assert covered / total >= 0.85, covered
    # The bootstrap sigma matches the actual spread of estimates over independent datasets.
    for key in TRUTH:
        ratio = np.median(sigmas[key]) / np.std(values[key], ddof=1)
        assert 0.5 < ratio < 2.0, (key, ratio)


def test_synthetic_noiseless_recovery_is_exact():
    res = F.fit(_synthetic(np.random.default_rng(0), 0.0), model="dense", starts=SMALL_GRID)
    for key, true in TRUTH.items():
        assert getattr(res, key) == pytest.approx(true, rel=1e-4), key
    assert res.fit_error < 1e-7


@pytest.mark.parametrize("shape", ["tanh", "erf"])
def test_synthetic_unified_recovers_the_curve(shape):
    from gmse_cli.gmse import gmse_of

    curve = {"L": 1.0, "F": 0.41, "C": 1.39}
    specs = ["bf16", "int2", "int3", "int4", "int8", "int2|int2", "int3|int3", "int4|int4", "int8|int8"]
    gm = {s: gmse_of(s.split("|")[0]).gmse for s in specs}
    s_of = {"tanh": math.tanh, "erf": math.erf}[shape]  # the curve written out, not uscl's capacity()
    rho = {s: (curve["L"] * s_of(curve["F"] * -math.log(gm[s]) / math.log(4)) ** curve["C"]) ** len(s.split("|"))
           for s in specs}
    runs = _synthetic(np.random.default_rng(11), 0.002, rho, specs)
    res = F.fit(runs, model="unified", starts=SMALL_GRID, loso=False, curve=shape)
    fitted = res.families["quantization"]
    assert fitted.shape == shape
    assert fitted.F == pytest.approx(curve["F"], rel=0.1)
    assert fitted.C == pytest.approx(curve["C"], rel=0.15)
    assert res.alpha == pytest.approx(TRUTH["alpha"], rel=0.1)
    assert res.fit_error < 0.004


@pytest.mark.parametrize("shape", ["tanh", "erf"])
def test_capacity_fit_recovers_a_known_curve(shape):
    bits = np.linspace(0.3, 7, 12)
    truth = (0.95, 0.33, 0.7)
    s_of = {"tanh": math.tanh, "erf": math.erf}[shape]
    points = [F.CapacityPoint(name=f"p{i}", stages=(("sparsity", 4.0 ** -b),), rho=truth[0] * s_of(truth[1] * b) ** truth[2])
              for i, b in enumerate(bits)]
    res = F.fit_capacity(points, curve=shape)
    got = res.families["sparsity"]
    np.testing.assert_allclose([got.L, got.F, got.C], truth, rtol=1e-5)
    assert res.fit_error < 1e-7


def test_capacity_bootstrap_intervals_bracket_the_estimate():
    points = [F.CapacityPoint(name=str(s), stages=(("sparsity", _magnitude_gmse(s)),), rho=r) for s, r in PAPER_SPARSITY]
    res = F.fit_capacity(points, bootstrap=100, seed=1)
    for key in ("L", "F", "C"):
        c = res.constants[f"sparsity.{key}"]
        assert c.low <= c.value <= c.high and c.sigma > 0


def test_capacity_fit_with_every_constant_held_returns_the_base_curve():
    """Two distinct GMSEs: the family is held at the base law, so nothing is free to fit.

    Regression: the optimizer was handed zero free coordinates and crashed (a held-out refit
    of `uscl fit --model capacity` reaches this whenever leaving a scheme out leaves its
    family with fewer than 3 GMSE values).
    """
    law = load_law()
    curve = law.curve("sparsity")
    L, Fc, C = curve.L.value, curve.F.value, curve.C.value
    gmses = [_magnitude_gmse(0.3), _magnitude_gmse(0.5)]
    points = [F.CapacityPoint(name=f"p{i}", stages=(("sparsity", g),), rho=0.8) for i, g in enumerate(gmses)]
    for bootstrap in (0, 5):
        res = F.fit_capacity(points, base_law=law, bootstrap=bootstrap)
        got = res.families["sparsity"]
        assert got.held and (got.L, got.F, got.C) == (L, Fc, C)
        expected = [L * math.tanh(Fc * math.log(g) / math.log(0.25)) ** C for g in gmses]
        np.testing.assert_allclose(res.predicted, expected, rtol=1e-12)


def test_batched_lbfgs_with_no_free_coordinate_returns_the_start():
    def fun(x, rows):
        return np.array([1.0, np.inf])[rows], np.zeros((len(rows), 0))

    x, f, iters, conv = batched_lbfgs(fun, np.zeros((2, 0)))
    assert x.shape == (2, 0) and f[0] == 1.0 and list(conv) == [True, False] and list(iters) == [0, 0]


def _magnitude_gmse(s):
    t = norm.ppf((1 + s) / 2)
    return float((2 * norm.cdf(t) - 1) - 2 * t * norm.pdf(t))


# --------------------------------------------------------------------------------------------
# The shipped default law (generated by examples/calibrate_paper_law.py)
# --------------------------------------------------------------------------------------------


def test_shipped_law_carries_the_papers_constants():
    law = load_law()
    for key, value in (("alpha", 0.13), ("beta", 0.33), ("E", 1.3)):
        assert getattr(law, key).value == value
    for key, (value, sigma) in PAPER_QUANT.items():
        const = getattr(law.families["quantization"], key)
        assert (const.value, const.sigma) == (value, sigma)
        assert getattr(law.families["vq"], key).value == value
        assert "paper" in const.provenance
    assert "QuEST" in law.A.provenance and "QuEST" in law.B.provenance
    assert set(law.meta) >= {"data", "options", "date", "uscl_version"}


def test_shipped_sparsity_curve_reproduces_the_papers_capacities():
    curve = load_law().families["sparsity"]
    for s, rho in PAPER_SPARSITY:
        assert curve.rho(_magnitude_gmse(s)) == pytest.approx(rho, abs=0.015), s


def test_shipped_law_predicts_quest(quest):
    """Predicted losses from the shipped law, computed here from its constants: RMSE of log-loss."""
    from gmse_cli.gmse import gmse_of

    law = load_law()
    resid = []
    for run in quest:
        rho = 1.0
        for fmt in filter(None, (run.weight_format(), run.activation_format())):
            for family, part in fmt.stage_formats():
                rho *= law.families[family].rho(gmse_of(part).gmse)
        resid.append(math.log(law.loss(run.N, run.D, rho)) - math.log(run.loss))
    rmse = math.sqrt(np.mean(np.square(resid)))
    assert rmse < 0.02
    assert float(law.meta["fit_error_quest"]) == pytest.approx(rmse, abs=1e-5)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_too_few_runs_says_how_many():
    runs = _synthetic(np.random.default_rng(0), 0.0)[:4]
    with pytest.raises(FitError, match="needs at least 6 runs; got 4"):
        F.fit(runs, model="dense", starts=SMALL_GRID)


def test_too_few_sizes():
    runs = [r for r in _synthetic(np.random.default_rng(0), 0.0) if r.N < 1e8]
    with pytest.raises(FitError, match="3 or more model sizes"):
        F.fit(runs, model="dense", starts=SMALL_GRID)


def test_scheme_at_one_size_is_rejected_by_decoupled():
    runs = _synthetic(np.random.default_rng(0), 0.0)
    runs.append(Run(scheme="int4", weights="int4", N=1e8, D=1e10, loss=3.0))
    with pytest.raises(FitError, match="'int4' has runs at one model size only"):
        F.fit(runs, model="decoupled", starts=SMALL_GRID)


def test_decoupled_needs_a_reference():
    runs = [r.model_copy(update={"scheme": "int4", "weights": "int4"}) for r in _synthetic(np.random.default_rng(0), 0.0)]
    with pytest.raises(FitError, match="uncompressed reference"):
        F.fit(runs, model="decoupled", starts=SMALL_GRID)


def test_unidentifiable_family_without_base_law():
    runs = _synthetic(np.random.default_rng(0), 0.0, {"int4": 0.8}, ("int4",))
    with pytest.raises(FitError, match="family 'quantization' has 1 distinct GMSE"):
        F.fit(runs, model="unified", starts=SMALL_GRID)


def test_unknown_fixed_constant_and_model():
    runs = _synthetic(np.random.default_rng(0), 0.0)
    with pytest.raises(FitError, match="'gamma' is not a constant"):
        F.fit(runs, model="dense", fixed={"gamma": 1.0}, starts=SMALL_GRID)
    with pytest.raises(FitError, match="unknown model 'chinchilla'"):
        F.fit(runs, model="chinchilla")
    with pytest.raises(FitError, match="^huber_delta=-1.0 must be a positive number"):
        F.fit(runs, huber_delta=-1.0)


def test_non_convergence_is_reported(monkeypatch):
    monkeypatch.setattr(loss_fit, "is_converged", lambda *args, **kwargs: False)
    with pytest.raises(FitError, match="did not converge"):
        F.fit(_synthetic(np.random.default_rng(0), 0.0), model="dense", starts=SMALL_GRID)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _csv(tmp_path, runs):
    path = tmp_path / "runs.csv"
    lines = ["N,D,loss,weights,activations"] + [f"{r.N},{r.D},{r.loss},{r.weights},{r.activations or ''}" for r in runs]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_dense_json(run_cli, tmp_path):
    import json

    path = _csv(tmp_path, _synthetic(np.random.default_rng(5), 0.003))
    res = run_cli("fit", str(path), "--model", "dense", "--json", "--where", "N>=5e7", "--out", str(tmp_path / "law.toml"))
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"][0]
    assert {"A", "alpha", "B", "beta", "E", "fit_error", "n_runs", "capacities", "families"} <= set(data)
    assert data["n_runs"] == 20 and data["capacities"] == [] and data["families"] == {}
    assert load_law(tmp_path / "law.toml").alpha.value == pytest.approx(data["alpha"])


def test_cli_decoupled_json_and_plot(run_cli, tmp_path, shared_data):
    import json

    from PIL import Image

    png = tmp_path / "fit.png"
    res = run_cli("fit", str(shared_data / "quest_runs.json"), "-m", "decoupled", "--where", "scheme!~W:int",
                  "--bootstrap", "8", "--json", "--plot", str(png))
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"][0]
    raw = json.loads((shared_data / "quest_runs.json").read_text())
    assert data["n_runs"] == sum(r["w_quant"] not in ("TrustQuantizer", "ClipQuantizer") for r in raw)
    caps = data["capacities"]
    assert {"scheme", "weights", "activations", "rho", "rho_low", "rho_high"} <= set(caps[0])
    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 10


def test_cli_bad_input_is_one_line_exit_2(run_cli, tmp_path, shared_data):
    for args, needle in [
        (["fit", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["fit", str(shared_data / "quest_runs.json"), "--where", "bits"], "KEY OP VALUE"),
        (["fit", str(shared_data / "quest_runs.json"), "--fix", "alpha"], "NAME=VALUE"),
        (["fit", str(shared_data / "quest_runs.json"), "-m", "decoupled", "--out", "x.toml"], "no"),
        (["fit", str(shared_data / "quest_runs.json"), "-m", "nope"], "is not one of"),
    ]:
        res = run_cli(*args)
        assert res.code == 2, (args, res.stderr)
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_outputs_never_replace_an_input_or_each_other(run_cli, tmp_path):
    """Regression: `--out runs.csv` replaced the runs with the law, and `--out x.png --plot x.png`
    wrote the plot and then the law over it; both exited 0."""
    path = _csv(tmp_path, _synthetic(np.random.default_rng(5), 0.003))
    runs_bytes = path.read_bytes()
    (tmp_path / "link.csv").symlink_to(path)
    for extra, named in [(["--out", str(path)], "runs.csv"), (["--out", str(tmp_path / "link.csv")], "runs.csv"),
                         (["--out", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")], "x.png")]:
        res = run_cli("fit", str(path), "--model", "dense", *extra)
        assert res.code == 2, res.stderr
        assert named in res.stderr and "choose another path" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
        assert path.read_bytes() == runs_bytes and not (tmp_path / "x.png").exists()


def test_cli_nan_loss_is_rejected(run_cli, tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n1e7,2e8,nan\n")
    res = run_cli("fit", str(path))
    assert res.code == 2 and "loss = nan" in res.stderr


def test_data_error_type():
    assert issubclass(DataError, Exception)


def test_capacity_below_float_range_is_no_law():
    """Regression: --fix alpha=1e-6 drove the quantization curve to C ~ 1e6, so every capacity
    underflowed to 0 while the log-domain fit still matched the losses; uscl fit printed rho 0
    beside finite predictions, a numpy divide-by-zero warning, and wrote a law predicting inf."""
    import warnings

    from gmse_cli.gmse import gmse_of

    specs = ["bf16", "int2", "int4", "int8"]
    curve = {"L": 1.0, "F": 0.41, "C": 1.39}
    rho = {s: capacity(gmse_of(s).gmse, **curve) for s in specs}
    runs = _synthetic(np.random.default_rng(3), 0.005, rho, specs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = F.fit(runs, model="unified", fixed={"alpha": 1e-6}, starts=SMALL_GRID, loso=False)
    assert any(r.rho == 0 for r in res.residuals)  # the degenerate optimum this test is about
    assert "capacity rho = 0" in res.law_problem()
