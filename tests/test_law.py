"""The capacity law, its composition rule, its uncertainty model and its files.

Independent references used here:
- paper.md: the uniform-grid GMSEs of QuEST's quantizer (inputs), the weight x activation
  capacity table and the sparsity capacities (what the shipped law must reproduce);
- the magnitude-pruning GMSE closed form (2 Phi(t) - 1) - 2 t phi(t), t = Phi^-1((1 + s)/2),
  evaluated here with scipy;
- normal-distribution quantiles (value +/- 1.96 sigma) for the Monte Carlo propagation: with one
  uncertain constant that enters monotonically, the interval's ends are the function at the
  constant's quantiles;
- joint draws built here so that the loss at one (N, D) is the same in every row (A an exact
  function of alpha): the joint interval there must be a point, whatever the code does.
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gmse_cli.errors import LawError
from gmse_cli.law import (
    Constant,
    FamilyCurve,
    Law,
    LawDraws,
    capacity,
    capacity_interval,
    capacity_parts,
    effective_bits,
    factorized_capacity,
    law_to_toml,
    load_law,
    loss_interval,
    predicted_loss,
    sample_constant,
    sample_law,
    save_law,
    scheme_capacity,
    shipped_law,
    single_gmse_capacity,
    tensor_parts,
)
from gmse_cli.paths import laws_dir
from gmse_cli.spec import Family, Scheme, catalog, resolve_format

Z95 = stats.norm.ppf(0.975)

# paper.md section 2: QuEST's int-b GMSE (the inputs of the capacity table below).
QUEST_GMSE = {1: 0.363380, 2: 0.118846, 3: 0.037440, 4: 0.011543}

# paper.md section 1: capacity of W-bit weights x A-bit activations (16 = not quantized).
PAPER_WA = {
    1: {1: .09, 2: .15, 3: .19, 4: .20, 16: .21},
    2: {1: .15, 2: .30, 3: .40, 4: .45, 16: .45},
    3: {1: .19, 2: .42, 3: .62, 4: .70, 16: .74},
    4: {1: .20, 2: .46, 3: .72, 4: .85, 16: .90},
    16: {1: .21, 2: .48, 3: .76, 4: .91, 16: 1.00},
}
PAPER_SPARSITY = dict(zip([.1, .2, .3, .4, .5, .6, .7, .8, .9], [.95, .89, .84, .78, .72, .64, .56, .47, .35], strict=True))

# The paper's capacities are read off its figures (two digits): allow +/-0.01 for the reading.
READ_OFF = 0.01


def _c(value, sigma=None, **kw) -> Constant:
    return Constant(value=value, sigma=sigma, provenance="test", **kw)


def paper_like_law(**overrides) -> Law:
    """The paper's Llama/C4 constants (paper.md) with stand-in A, B and sparsity curve."""
    quant = FamilyCurve(L=_c(1.0, 0.7), F=_c(0.41, 0.02), C=_c(1.39, 0.08))
    fields = dict(
        name="test-law", A=_c(12.0), alpha=_c(0.13, 0.05), B=_c(300.0), beta=_c(0.33, 0.06),
        E=_c(1.3, 0.5),
        families={
            Family.QUANTIZATION: quant, Family.VQ: quant,
            Family.SPARSITY: FamilyCurve(L=_c(1.0), F=_c(0.6), C=_c(1.0)),
        },
    )
    fields.update(overrides)
    return Law(**fields)


def magnitude_gmse(s: float) -> float:
    t = stats.norm.ppf((1 + s) / 2)
    return (2 * stats.norm.cdf(t) - 1) - 2 * t * stats.norm.pdf(t)


# --------------------------------------------------------------------------------------------
# The capacity function
# --------------------------------------------------------------------------------------------


def test_effective_bits_inverts_the_rate_distortion_bound():
    for bits in (0.5, 1.0, 3.0, 8.0):
        assert effective_bits(4.0**-bits) == pytest.approx(bits, rel=1e-12)
    assert effective_bits(0.0) == math.inf


def test_nothing_kept_is_zero_bits_not_negative_zero():
    # GMSE 1 (every entry lost): 0 bits, printed 0.0 in tables and JSON, never -0.0.
    from gmse_cli.gmse.estimates import effective_bits_of

    for value in (effective_bits(1.0), float(effective_bits(np.array([1.0]))[0]), effective_bits_of(1.0)):
        assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_capacity_endpoints():
    # GMSE 1 (nothing kept) -> tanh(0) = 0; GMSE -> 0 -> tanh -> 1, so rho -> L.
    assert capacity(1.0, 0.9, 0.4, 1.4) == 0.0
    assert capacity(2.0, 0.9, 0.4, 1.4) == 0.0  # worse than nothing still keeps nothing
    assert capacity(0.0, 0.9, 0.4, 1.4) == pytest.approx(0.9)
    # C = 1 and GMSE = 4^-b: rho = L tanh(F b)
    assert capacity(4.0**-2, 0.8, 0.5, 1.0) == pytest.approx(0.8 * math.tanh(1.0), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    g1=st.floats(1e-12, 1.0), g2=st.floats(1e-12, 1.0),
    L=st.floats(0.05, 1.5), F=st.floats(0.01, 3.0), C=st.floats(0.2, 4.0),
)
def test_capacity_bounded_by_L_and_decreasing_in_gmse(g1, g2, L, F, C):
    r1, r2 = capacity(g1, L, F, C), capacity(g2, L, F, C)
    assert 0.0 <= r1 <= L and 0.0 <= r2 <= L
    if g1 < g2:
        assert r1 >= r2


def test_predicted_loss_terms():
    # A (N rho)^-alpha + B D^-beta + E, written out; rho = 0 keeps nothing: infinite loss
    value = predicted_loss(1e8, 2e9, 0.5, A=400.0, alpha=0.34, B=410.0, beta=0.28, E=1.69)
    assert value == pytest.approx(400.0 * 5e7**-0.34 + 410.0 * 2e9**-0.28 + 1.69, rel=1e-14)
    assert predicted_loss(1e8, 2e9, 0.0, A=1.0, alpha=0.3, B=1.0, beta=0.3, E=1.0) == math.inf


def test_law_rho_lossless_and_uncovered():
    law = paper_like_law(families={Family.QUANTIZATION: paper_like_law().families[Family.QUANTIZATION]})
    assert law.rho(Family.NONE, 0.3) == 1.0
    with pytest.raises(LawError, match="no capacity curve for family 'sparsity'.*covers: quantization"):
        law.rho("sparsity", 0.1)


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def test_capacity_parts_of_a_composite_are_its_standalone_stages():
    parts = capacity_parts(resolve_format("2:4+int4"))
    assert [(p.tensor, p.family) for p in parts] == [("weights", Family.SPARSITY), ("weights", Family.QUANTIZATION)]
    assert parts[0].format.stages == catalog()["2:4"].stages
    assert parts[1].format.stages == catalog()["int4"].stages
    # rotations ride along with the quantizer; a lossless format has no parts
    (had,) = capacity_parts(resolve_format("had128+int4"))
    assert had.format.stages == catalog()["had128+int4"].stages
    assert capacity_parts(resolve_format("had128")) == []


def test_tensor_parts_read_the_last_lossy_family():
    scheme = Scheme(weights=resolve_format("2:4+int4"), activations=resolve_format("int8"))
    parts = tensor_parts(scheme)
    assert [(p.tensor, p.family, p.format.name) for p in parts] == [
        ("weights", Family.QUANTIZATION, "2:4+int4"), ("activations", Family.QUANTIZATION, "int8"),
    ]
    assert tensor_parts(resolve_format("had128"))[0].family is Family.NONE


def test_factorization_rule_over_tensors_and_stages():
    law = paper_like_law()
    gmse = {"int4": QUEST_GMSE[4], "int2": QUEST_GMSE[2], "2:4": magnitude_gmse(0.5)}

    def measure(fmt):
        # the stage formats carry derived names; look them up by their stages
        for name, g in gmse.items():
            if fmt.stages == catalog()[name].stages:
                return g
        raise AssertionError(fmt)

    w = resolve_format("2:4+int4")
    a = resolve_format("int2")
    both = scheme_capacity(Scheme(weights=w, activations=a), law, measure)
    assert both == pytest.approx(scheme_capacity(w, law, measure) * scheme_capacity(a, law, measure), rel=1e-12)
    # the composite is the product of its stages' capacities from the curves themselves
    expect = law.families[Family.SPARSITY].rho(gmse["2:4"]) * law.families[Family.QUANTIZATION].rho(gmse["int4"])
    assert scheme_capacity(w, law, measure) == pytest.approx(expect, rel=1e-12)
    assert factorized_capacity(law, [(Family.SPARSITY, gmse["2:4"]), (Family.QUANTIZATION, gmse["int4"])]) == (
        pytest.approx(expect, rel=1e-12)
    )
    # rho(R1, R2) <= min(rho(R1), rho(R2)) (paper.md), since every factor is <= L <= 1
    assert both <= min(scheme_capacity(w, law, measure), scheme_capacity(a, law, measure))
    # values may be passed in capacity_parts order instead of a callable
    assert scheme_capacity(w, law, [gmse["2:4"], gmse["int4"]]) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(LawError, match="got 1 GMSE values for 2 lossy stages"):
        scheme_capacity(w, law, [0.1])


def test_single_gmse_capacity_uses_the_whole_pipeline():
    law = paper_like_law()
    w = resolve_format("2:4+int4")
    whole = 0.08  # any composite GMSE
    assert single_gmse_capacity(w, law, [whole]) == pytest.approx(law.families[Family.QUANTIZATION].rho(whole))
    # for a one-stage format both readings coincide
    int4 = resolve_format("int4")
    assert single_gmse_capacity(int4, law, [QUEST_GMSE[4]]) == scheme_capacity(int4, law, [QUEST_GMSE[4]])


def test_uncovered_family_is_a_law_error():
    law = paper_like_law(families={Family.QUANTIZATION: paper_like_law().families[Family.QUANTIZATION]})
    with pytest.raises(LawError, match="family 'sparsity'"):
        scheme_capacity(resolve_format("2:4+int4"), law, [0.07, 0.01])
    with pytest.raises(LawError, match="family 'vq'"):
        capacity_interval(law, [(Family.VQ, 0.1, 0.0)])


# --------------------------------------------------------------------------------------------
# Uncertainty propagation
# --------------------------------------------------------------------------------------------


def test_sample_constant_sigma_is_a_normal():
    draws = sample_constant(_c(2.0, 0.1), size=20000, rng=np.random.default_rng(1))
    # mean within 4 standard errors, sd within 4 of its own (sd of the sd ~ sigma / sqrt(2n))
    assert abs(draws.mean() - 2.0) < 4 * 0.1 / math.sqrt(20000)
    assert abs(draws.std() - 0.1) < 4 * 0.1 / math.sqrt(2 * 20000)


def test_sample_constant_low_high_is_a_95_interval():
    const = _c(1.0, low=0.8, high=1.6)  # skewed on purpose
    draws = sample_constant(const, size=40000, rng=np.random.default_rng(2))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    # quantile standard error at p = 2.5%: sqrt(p(1-p)/n) / density ~ 0.0008 / (0.058/sigma)
    assert lo == pytest.approx(0.8, abs=0.01)
    assert hi == pytest.approx(1.6, abs=0.03)
    assert np.median(draws) < 1.0 + 0.05 and np.median(draws) > 1.0  # mode at value, mass right


def test_fixed_constant_and_truncation():
    rng = np.random.default_rng(3)
    assert np.all(sample_constant(_c(0.4), size=10, rng=rng) == 0.4)
    L = sample_constant(_c(1.0, 0.7), size=5000, rng=rng, lower=0.0, upper=1.0)
    assert L.min() > 0 and L.max() <= 1.0
    # a truncated normal, not a pile-up at the bound: few draws sit at 1 exactly
    assert np.mean(L == 1.0) < 0.01
    # a value above the bound moves the bound to the value (a law may claim L > 1)
    above = sample_constant(_c(1.2, 0.05), size=2000, rng=rng, upper=1.0)
    assert 1.0 < np.median(above) and above.max() <= 1.2


def test_law_draws_respect_physics_and_seed():
    law = paper_like_law()
    a = sample_law(law, draws=3000, rng=7, vary_L=True)
    b = sample_law(law, draws=3000, rng=7, vary_L=True)
    assert np.array_equal(a.curves[Family.QUANTIZATION][0], b.curves[Family.QUANTIZATION][0])
    L, F, C = a.curves[Family.QUANTIZATION]
    assert L.max() <= 1.0 and L.min() > 0 and F.min() > 0 and C.min() > 0
    assert L.std() > 0.1  # the paper's sigma 0.7, truncated to (0, 1]
    # by default L is held at its value (not identified apart from A; see gmse_cli.law)
    held = sample_law(law, draws=100, rng=7)
    assert np.all(held.curves[Family.QUANTIZATION][0] == 1.0)
    assert held.curves[Family.QUANTIZATION][1].std() > 0
    assert a.alpha.min() > 0 and a.beta.min() > 0 and a.E.min() >= 0
    # every capacity draw is within [0, 1]: rho <= L <= 1
    rho = a.capacity([(Family.QUANTIZATION, QUEST_GMSE[2], 0.0)], rng=np.random.default_rng(0))
    assert rho.min() >= 0 and rho.max() <= 1.0


def test_capacity_interval_matches_the_constant_quantiles():
    # Only F uncertain, C = 1: rho = L tanh(F b) is increasing in F, so its interval ends are
    # rho at F -/+ 1.96 sigma (the normal's quantiles) -- computed here without the code's draws.
    sigma = 0.02
    law = paper_like_law(families={Family.QUANTIZATION: FamilyCurve(L=_c(0.95), F=_c(0.41, sigma), C=_c(1.0))})
    b = effective_bits(QUEST_GMSE[3])
    interval = capacity_interval(law, [(Family.QUANTIZATION, QUEST_GMSE[3], 0.0)], draws=20000, rng=5)
    lo_ref = 0.95 * math.tanh((0.41 - Z95 * sigma) * b)
    hi_ref = 0.95 * math.tanh((0.41 + Z95 * sigma) * b)
    # the 2.5% quantile of 20000 draws is within ~0.02 sigma (1 s.e.); allow 0.1 sigma in F
    tol = 0.95 * b * 0.1 * sigma
    assert interval.value == pytest.approx(0.95 * math.tanh(0.41 * b), rel=1e-12)
    assert interval.low == pytest.approx(lo_ref, abs=tol)
    assert interval.high == pytest.approx(hi_ref, abs=tol)


def test_gmse_uncertainty_propagates():
    # Fixed constants, GMSE with a standard error: the interval is rho at GMSE +/- 1.96 se.
    law = paper_like_law(families={Family.QUANTIZATION: FamilyCurve(L=_c(1.0), F=_c(0.41), C=_c(1.39))})
    g, se = 0.05, 0.002
    interval = capacity_interval(law, [(Family.QUANTIZATION, g, se)], draws=20000, rng=11)
    curve = law.families[Family.QUANTIZATION]
    slope = abs(curve.rho(g + 1e-6) - curve.rho(g - 1e-6)) / 2e-6
    assert interval.low == pytest.approx(curve.rho(g + Z95 * se), abs=slope * 0.1 * se)
    assert interval.high == pytest.approx(curve.rho(g - Z95 * se), abs=slope * 0.1 * se)


def test_no_uncertainty_gives_a_point():
    law = paper_like_law(
        alpha=_c(0.13), beta=_c(0.33), E=_c(1.3),
        families={Family.QUANTIZATION: FamilyCurve(L=_c(1.0), F=_c(0.41), C=_c(1.39))},
    )
    interval = capacity_interval(law, [(Family.QUANTIZATION, QUEST_GMSE[4], 0.0)])
    # vectorized and scalar tanh may differ in the last bit
    assert interval.low == pytest.approx(interval.value, rel=1e-14)
    assert interval.high == pytest.approx(interval.value, rel=1e-14)


def test_loss_interval_from_E_alone():
    # Only E uncertain: loss = const + E, so the interval is loss -/+ 1.96 sigma_E.
    law = paper_like_law(alpha=_c(0.13), beta=_c(0.33), E=_c(1.3, 0.05),
                         families={Family.QUANTIZATION: FamilyCurve(L=_c(1.0), F=_c(0.41), C=_c(1.39))})
    stages = [(Family.QUANTIZATION, QUEST_GMSE[4], 0.0)]
    interval = loss_interval(law, 2e8, 2e10, stages, draws=20000, rng=3)
    rho = capacity(QUEST_GMSE[4], 1.0, 0.41, 1.39)
    value = 12.0 * (2e8 * rho) ** -0.13 + 300.0 * 2e10**-0.33 + 1.3
    assert interval.value == pytest.approx(value, rel=1e-12)
    assert interval.low == pytest.approx(value - Z95 * 0.05, abs=0.005)
    assert interval.high == pytest.approx(value + Z95 * 0.05, abs=0.005)


@pytest.mark.parametrize("draws", [0, 1, -5, 10**7, 2.5, True])
def test_bad_draw_counts_are_law_errors(draws):
    with pytest.raises(LawError, match="draws = "):
        sample_law(paper_like_law(), draws=draws)


# --------------------------------------------------------------------------------------------
# Joint draws
# --------------------------------------------------------------------------------------------

N_STAR, D_STAR = 2e8, 2e10
INT4 = [(Family.QUANTIZATION, QUEST_GMSE[4], 0.0)]
RHO4 = capacity(QUEST_GMSE[4], 1.0, 0.41, 1.39)


def compensating_law(**overrides) -> tuple[Law, np.ndarray, np.ndarray]:
    """A law certain in everything but A and alpha, whose 300 joint rows keep the params term
    A (N* rho)^-alpha at its point value 12 (N* rho)^-0.13: the loss at N* is the same in
    every row. A's marginal sigma is the rows' spread, as a file consistent with them states."""
    alpha = np.random.default_rng(1).normal(0.13, 0.05, 300).clip(0.01, None)
    A = 12.0 * (N_STAR * RHO4) ** (alpha - 0.13)
    fields = dict(
        A=_c(12.0, float(A.std())), alpha=_c(0.13, 0.05), beta=_c(0.33), E=_c(1.3),
        families={Family.QUANTIZATION: FamilyCurve(L=_c(1.0), F=_c(0.41), C=_c(1.39))},
        draws=LawDraws(provenance="test: A compensates alpha exactly", constants={"A": tuple(A), "alpha": tuple(alpha)}),
    )
    return paper_like_law(**(fields | overrides)), A, alpha


def test_joint_draws_keep_the_compensation_that_marginals_lose():
    law, A, alpha = compensating_law()
    value = 12.0 * (N_STAR * RHO4) ** -0.13 + 300.0 * D_STAR**-0.33 + 1.3
    joint = loss_interval(law, N_STAR, D_STAR, INT4, rng=2)
    assert joint.value == pytest.approx(value, rel=1e-12)
    assert joint.high - joint.low < 1e-9 * value
    # The same marginals drawn independently: alpha's +/-0.05 alone moves the loss by nats.
    independent = loss_interval(law.model_copy(update={"draws": None}), N_STAR, D_STAR, INT4, rng=2)
    assert independent.high - independent.low > 0.5
    # Away from N* the rows differ; the interval is their own quantile range (rows resampled
    # with replacement: with 20000 draws the 2.5% point lands within one row of its place).
    rows = A * (100 * N_STAR * RHO4) ** -alpha + 300.0 * D_STAR**-0.33 + 1.3
    far = loss_interval(law, 100 * N_STAR, D_STAR, INT4, draws=20000, rng=3)
    assert np.quantile(rows, 0.015) <= far.low <= np.quantile(rows, 0.035)
    assert np.quantile(rows, 0.965) <= far.high <= np.quantile(rows, 0.985)


def test_each_draw_is_one_whole_row():
    law, A, alpha = compensating_law()
    samples = sample_law(law, draws=2000, rng=4)
    rows = set(zip(A.tolist(), alpha.tolist(), strict=True))
    assert all(pair in rows for pair in zip(samples.A.tolist(), samples.alpha.tolist(), strict=True))
    assert len(set(samples.A.tolist())) > 250  # resampled across the rows, not a few of them
    assert np.array_equal(sample_law(law, draws=2000, rng=4).A, samples.A)  # seeded


def test_constants_without_a_column_keep_their_marginals():
    # E uncertain but not in the rows: the loss at N* is then E's normal, value +/- 1.96 sigma_E.
    law, _, _ = compensating_law(E=_c(1.3, 0.05))
    interval = loss_interval(law, N_STAR, D_STAR, INT4, draws=20000, rng=5)
    assert interval.low == pytest.approx(interval.value - Z95 * 0.05, abs=0.005)
    assert interval.high == pytest.approx(interval.value + Z95 * 0.05, abs=0.005)


def test_vary_L_with_joint_draws():
    quant = FamilyCurve(L=_c(1.0, 0.7), F=_c(0.41, 0.02), C=_c(1.39, 0.08))
    law, _, _ = compensating_law(families={Family.QUANTIZATION: quant})
    # no L column: held unless vary_L, then its marginal (truncated to (0, 1])
    assert np.all(sample_law(law, draws=500, rng=6).curves[Family.QUANTIZATION][0] == 1.0)
    varied = sample_law(law, draws=500, rng=6, vary_L=True).curves[Family.QUANTIZATION][0]
    assert varied.std() > 0.1 and varied.max() <= 1.0
    # an L column: always its rows, since the row's A was fitted with that L
    column = tuple(np.linspace(0.6, 1.0, law.draws.rows))
    with_L = law.model_copy(update={"draws": LawDraws(
        provenance="test", constants=law.draws.constants | {"quantization.L": column})})
    for vary_L in (False, True):
        L = sample_law(with_L, draws=500, rng=6, vary_L=vary_L).curves[Family.QUANTIZATION][0]
        assert set(L.tolist()) <= set(column) and L.std() > 0.05


@pytest.mark.parametrize("params, tokens", [(0, 1e9), (-1e6, 1e9), (1e8, 0), (math.inf, 1e9), (1e8, math.nan), (0.5, 1e9), (1e8, 0.999)])
def test_bad_scale_is_a_law_error(params, tokens):
    with pytest.raises(LawError, match="must be a finite count of at least 1"):
        loss_interval(paper_like_law(), params, tokens, [])


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    law = paper_like_law(meta={"source": "a test"}, description='quotes " and \\ survive')
    path = tmp_path / "law.toml"
    save_law(law, path)
    assert load_law(path) == law
    assert Law.model_validate(law.model_dump()) == law


def test_round_trip_with_draws(tmp_path):
    rng = np.random.default_rng(0)
    columns = {"A": tuple(rng.uniform(5, 20, 7)), "alpha": tuple(rng.uniform(0.1, 0.2, 7)),
               "quantization.F": tuple(rng.uniform(0.3, 0.5, 7)), "sparsity.C": tuple(rng.uniform(0.5, 2, 7))}
    law = paper_like_law(draws=LawDraws(provenance='made by "a test"', constants=columns))
    path = tmp_path / "law.toml"
    save_law(law, path)
    assert load_law(path) == law
    assert Law.model_validate(law.model_dump()) == law
    # a dotted constant name is one key of [draws.constants], not a nested table
    table = tomllib.loads(path.read_text())["draws"]["constants"]
    assert sorted(table) == sorted(columns) and table["quantization.F"] == list(columns["quantization.F"])
    # and a law without draws still writes and reads without them
    assert "[draws" not in law_to_toml(paper_like_law())


# The layout uscl wrote before its TOML writer was tomli-w (several draws per line, hand-made
# headers); law files users already have look like this and must keep loading.
OLD_LAYOUT = """\
name = "old-style"
description = "written by the first writer"

[meta]
source = "a test"

[A]
value = 12.0
provenance = "stand-in"

[alpha]
value = 0.13
sigma = 0.05
provenance = "paper"

[B]
value = 300.0
low = 200.0
high = 450.5
provenance = "stand-in"

[beta]
value = 0.33
sigma = 0.06
provenance = "paper"

[E]
value = 1.3
sigma = 0.5
provenance = "paper"

[families.quantization.L]
value = 1.0
provenance = "paper"

[families.quantization.F]
value = 0.41
provenance = "paper"

[families.quantization.C]
value = 1.39
provenance = "paper"

[draws]
provenance = "made by hand"

[draws.constants]
A = [
    11.0, 12.5, 13.0,
]
"quantization.F" = [
    0.4, 0.41, 0.42,
]
"""


def test_the_old_written_layout_still_loads(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(OLD_LAYOUT)
    curve = FamilyCurve(L=Constant(value=1.0, provenance="paper"), F=Constant(value=0.41, provenance="paper"),
                        C=Constant(value=1.39, provenance="paper"))
    expected = Law(
        name="old-style", description="written by the first writer", meta={"source": "a test"},
        A=Constant(value=12.0, provenance="stand-in"), alpha=Constant(value=0.13, sigma=0.05, provenance="paper"),
        B=Constant(value=300.0, low=200.0, high=450.5, provenance="stand-in"),
        beta=Constant(value=0.33, sigma=0.06, provenance="paper"), E=Constant(value=1.3, sigma=0.5, provenance="paper"),
        families={Family.QUANTIZATION: curve},
        draws=LawDraws(provenance="made by hand", constants={"A": (11.0, 12.5, 13.0), "quantization.F": (0.4, 0.41, 0.42)}),
    )
    assert load_law(path) == expected
    save_law(expected, path)  # and the new writer's layout reads back the same
    assert load_law(path) == expected


def test_a_multiline_description_round_trips(tmp_path):
    law = paper_like_law(description='first line\nsecond "line"\twith a tab', meta={"note": "a\nb"})
    path = tmp_path / "law.toml"
    save_law(law, path)
    assert load_law(path) == law


def _with_draws(body: str, provenance: str = 'provenance = "test"\n') -> str:
    return law_to_toml(paper_like_law()) + f"\n[draws]\n{provenance}\n[draws.constants]\n{body}"


@pytest.mark.parametrize(
    "text, message",
    [
        (_with_draws("A = [1.0, 2.0]\nalpha = [0.1, 0.2, 0.3]\n"), "every column needs the same number of rows"),
        (_with_draws("A = [1.0]\n"), "1 row"),
        (_with_draws("gamma = [1.0, 2.0]\n"), "draws column 'gamma' is not a constant of this law"),
        (_with_draws('"quantization.X" = [1.0, 2.0]\n'), "draws column 'quantization.X' is not a constant"),
        (_with_draws("alpha = [0.1, -0.2]\n"), "draws of alpha reach -0.2; alpha must be positive"),
        (_with_draws("E = [1.0, -0.5]\n"), "E must not be negative"),
        (_with_draws('"quantization.L" = [0.9, 1.2]\n'), "L may not exceed"),
        (_with_draws("A = [1.0, nan]\n"), "column 'A' has a value that is not finite"),
        (_with_draws("A = [1.0, 2.0]\n", provenance=""), r"draws.provenance: missing \(joint draws need"),
        (_with_draws("") , r"draws.constants: .*at least 1"),
        (law_to_toml(paper_like_law()) + '\n[draws]\nprovenance = "test"\n', r"draws.constants: missing"),
        (_with_draws("A = [1.0, 2.0]\n").replace("[draws.constants]", "[draws.constant]"), "unknown key"),
    ],
)
def test_bad_draws_tables(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LawError, match=message) as err:
        load_law(path)
    assert "\n" not in str(err.value)


def _broken(tmp_path, edit) -> str:
    text = edit(law_to_toml(paper_like_law()))
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


def _drop_table(header: str):
    def edit(text: str) -> str:
        start = text.index(f"[{header}]")
        end = text.find("\n[", start + 1)
        return text[:start] + (text[end + 1:] if end >= 0 else "")
    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_table("E"), r"bad.toml: E: missing \(every law needs A, alpha, B, beta and E\)"),
        (_drop_table("families.quantization.F"), r"families.quantization.F: missing \(every family curve needs L, F and C\)"),
        (lambda t: t.replace("[alpha]\nvalue = 0.13", "[alpha]\nvalue = -0.13"), r"alpha = -0.13 must be positive"),
        (lambda t: t.replace("[families.sparsity.C]\nvalue = 1.0", "[families.sparsity.C]\nvalue = 0.0"),
         r"capacity constant C = 0.0 must be positive"),
        (lambda t: t.replace("provenance", "provenanse", 1), r"A.provenanse: unknown key"),
        (lambda t: t + "\n[oops", r"malformed TOML"),
    ],
)
def test_bad_law_files(tmp_path, edit, message):
    with pytest.raises(LawError, match=message) as err:
        load_law(_broken(tmp_path, edit))
    assert "\n" not in str(err.value)


def test_missing_law_names_the_shipped_ones():
    with pytest.raises(LawError, match="no law file or shipped law named 'nope'"):
        load_law("nope")


# --------------------------------------------------------------------------------------------
# The shipped law against the paper's reported capacities
# --------------------------------------------------------------------------------------------

needs_shipped = pytest.mark.skipif(
    not (laws_dir() / "paper-llama-c4.toml").is_file(), reason="shipped law not generated yet"
)


@needs_shipped
def test_shipped_law_carries_the_paper_constants():
    law = shipped_law()
    # paper.md's Llama/C4 column, value and sigma
    for key, value, sigma in (("alpha", 0.13, 0.05), ("beta", 0.33, 0.06), ("E", 1.3, 0.5)):
        assert (getattr(law, key).value, getattr(law, key).sigma) == pytest.approx((value, sigma))
    q = law.curve(Family.QUANTIZATION)
    assert (q.L.value, q.F.value, q.C.value) == pytest.approx((1.0, 0.41, 1.39))
    assert (q.L.sigma, q.F.sigma, q.C.sigma) == pytest.approx((0.7, 0.02, 0.08))
    assert {Family.QUANTIZATION, Family.SPARSITY, Family.VQ} <= set(law.families)
    assert all(getattr(law, k).provenance for k in ("A", "alpha", "B", "beta", "E"))


@needs_shipped
def test_shipped_law_carries_joint_draws_consistent_with_its_marginals():
    law = shipped_law()
    assert law.draws is not None and 200 <= law.draws.rows <= 400
    columns = law.draws.constants
    assert {"A", "alpha", "B", "beta", "E", "quantization.F", "quantization.C"} <= set(columns)
    assert "quantization.L" not in columns  # held: not identified apart from A
    # A's and B's stated marginals are their draws' 95% range (not the conditional bootstrap)
    for key in ("A", "B"):
        low, high = np.percentile(columns[key], [2.5, 97.5])
        assert (getattr(law, key).low, getattr(law, key).high) == pytest.approx((low, high), rel=1e-9)
    # the paper constants' rows follow their marginals
    for key in ("alpha", "beta", "E"):
        assert np.mean(columns[key]) == pytest.approx(getattr(law, key).value, abs=0.3 * getattr(law, key).sigma)
        assert np.std(columns[key]) == pytest.approx(getattr(law, key).sigma, rel=0.2)


@needs_shipped
def test_shipped_law_round_trips_with_its_draws(tmp_path):
    law = shipped_law()
    assert law.draws is not None
    path = tmp_path / "again.toml"
    save_law(law, path)
    again = load_law(path)
    assert again == law and again.draws == law.draws
    # the file holds what the model does, nothing more (empty and unset fields left out)
    # (and a curve's default shape, tanh, so that an older uscl still reads a tanh law's file)
    want = law.model_dump(mode="json", exclude_none=True)
    for curve in want["families"].values():
        assert curve.pop("shape") == "tanh"
    assert tomllib.loads(path.read_text()) == want


# The paper's fit error (its Table 1), read as a relative error of the predicted loss.
FIT_ERROR = {Family.QUANTIZATION: 2.1e-3, Family.SPARSITY: 4.7e-4}
# The scale of the paper's own sweep (its largest model, middle token ratio) where a loss error
# is turned into a capacity error.
PAPER_N, PAPER_D = 200e6, 200e6 * 100


def fit_tolerance(law: Law, rho: float, family: Family) -> float:
    """The capacity change that moves the predicted loss by the paper's fit error:
    d(loss)/d(rho) = alpha * A (N rho)^-alpha / rho, so delta rho = err * loss * rho / (alpha T)."""
    term = law.A.value * (PAPER_N * rho) ** -law.alpha.value
    loss = float(law.loss(PAPER_N, PAPER_D, rho))
    return FIT_ERROR[family] * loss * rho / (law.alpha.value * term)


# Cells where the shipped law (the paper's own published L, F, C and the product rule) falls
# short of the figure by more than the tolerance; it never exceeds it. Two causes, both in the
# paper's numbers, not in this code: (1) where both tensors are quantized the figure is not the
# product of its own margins -- W3A3 is .62 against .74 x .76 = .56, W2A2 .30 against
# .45 x .48 = .22 -- while the paper's law (and its text: "factorization error around 1e-2")
# multiplies; (2) at 3-4 bits the published constants give rho(int3) = 0.67 and rho(int4) = 0.82
# where the figure reads .74-.76 and .90-.91. Strict where the miss is clear, so a law that comes
# to reproduce such a cell turns its xfail into a failure and the list stays true; not strict
# for the three cells within 0.005 of the tolerance (W4A2, W4A16, W16A3), where a recalibrated
# A alone could tip the outcome either way.
WA_SHORTFALL = {(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (3, 4), (4, 3), (4, 4), (16, 4)}
WA_BORDERLINE = {(4, 2), (4, 16), (16, 3)}


def _wa_cells():
    def cell(w, a):
        if (w, a) in WA_SHORTFALL:
            return pytest.param(w, a, marks=pytest.mark.xfail(strict=True, reason="figure vs published constants"))
        if (w, a) in WA_BORDERLINE:
            return pytest.param(w, a, marks=pytest.mark.xfail(strict=False, reason="within 0.005 of the tolerance"))
        return (w, a)

    return [cell(w, a) for w in PAPER_WA for a in PAPER_WA[w] if (w, a) != (16, 16)]


@needs_shipped
@pytest.mark.parametrize("w, a", _wa_cells())
def test_shipped_law_reproduces_the_weight_activation_table(w, a):
    law = shipped_law()
    stages = [(Family.QUANTIZATION, QUEST_GMSE[b], 0.0) for b in (w, a) if b != 16]
    interval = capacity_interval(law, stages, draws=4000, rng=0)
    paper = PAPER_WA[w][a]
    tol = READ_OFF + fit_tolerance(law, interval.value, Family.QUANTIZATION)
    assert interval.low - tol <= paper <= interval.high + tol, (
        f"W{w}A{a}: paper {paper}, law {interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}] +/- {tol:.3f}"
    )


@needs_shipped
def test_shipped_law_never_exceeds_the_figure():
    # The shortfalls above are one-sided: the law's point value sits below every cell.
    law = shipped_law()
    for w in PAPER_WA:
        for a in PAPER_WA[w]:
            if (w, a) != (16, 16):
                rho = factorized_capacity(law, [(Family.QUANTIZATION, QUEST_GMSE[b]) for b in (w, a) if b != 16])
                assert rho < PAPER_WA[w][a], (w, a, rho)


def test_the_figure_itself_does_not_factorize():
    # Why WA_SHORTFALL exists, checked on the paper's numbers alone: where both tensors are
    # quantized at 2-3 bits, the figure exceeds the product of its margins by far more than the
    # ~1e-2 factorization error the paper states.
    excess = {(w, a): PAPER_WA[w][a] - PAPER_WA[w][16] * PAPER_WA[16][a] for w in (2, 3) for a in (2, 3)}
    assert all(e > 0.05 for e in excess.values()), excess


@needs_shipped
@pytest.mark.parametrize("s", sorted(PAPER_SPARSITY))
def test_shipped_law_reproduces_the_sparsity_capacities(s):
    law = shipped_law()
    interval = capacity_interval(law, [(Family.SPARSITY, magnitude_gmse(s), 0.0)], draws=4000, rng=0)
    paper = PAPER_SPARSITY[s]
    tol = READ_OFF + fit_tolerance(law, interval.value, Family.SPARSITY)
    assert interval.low - tol <= paper <= interval.high + tol, (
        f"sparsity {s}: paper {paper}, law {interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}] +/- {tol:.3f}"
    )


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40, 999, 2000, 4001])
@pytest.mark.parametrize("level", [0.5, 0.683, 0.9, 0.95, 0.99])
def test_interval_ends_are_numpys_inverted_cdf_quantiles(n, level):
    from gmse_cli.law import interval_ends

    draws = np.random.default_rng(n).standard_normal((4, n))
    draws[0, 0] = np.inf  # an infinite loss stays inf, never nan
    expect = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=-1, method="inverted_cdf")
    np.testing.assert_array_equal(interval_ends(draws, level), expect)


def test_load_law_takes_a_law_and_names_what_is_not_one():
    """Regression: load_law(law) (rank and predict take a Law) was a TypeError traceback from Path."""
    from pathlib import Path

    from gmse_cli.law import load_law
    from gmse_cli.paths import laws_dir

    law = load_law(None)
    assert load_law(law) is law
    assert load_law(laws_dir() / "paper-llama-c4.toml") == load_law(str(laws_dir() / "paper-llama-c4.toml")) == law
    assert isinstance(laws_dir(), Path)
    for bad, kind in [(3, "int"), (["paper-llama-c4"], "list")]:
        with pytest.raises(LawError, match=f"not {kind} "):
            load_law(bad)
