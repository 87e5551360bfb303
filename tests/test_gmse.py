"""The GMSE engine against numbers derived outside it.

References:
- paper.md lists the uniform-grid GMSEs (QuEST's quantizer with its optimal clip) and FP4's;
- unstructured magnitude pruning has the closed form (2 Phi(t) - 1) - 2 t phi(t),
  t = Phi^-1((1 + s) / 2), recomputed here with scipy;
- a plain numpy implementation of QuEST's int-b quantizer written in this file is the second
  implementation the Monte Carlo path is checked against.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gmse_cli.errors import SpecError
from gmse_cli.gmse import SampleBank, estimate_gmse, exact_gmse, gmse_of, has_exact, stage_gmse, t95
from gmse_cli.gmse.clipping import ClipEnergy
from gmse_cli.spec import catalog, resolve_format

PAPER_GMSE = {
    "int1": 0.363380,
    "ternary": 0.190174,
    "int2": 0.118846,
    "int3": 0.037440,
    "int4": 0.011543,
    "int8": 8.782e-5,
    "fp4": 0.012685,
}


@pytest.mark.parametrize("name, value", sorted(PAPER_GMSE.items()))
def test_exact_matches_paper(name, value):
    est = gmse_of(name)
    assert est.method == "exact"
    # paper.md gives 6 significant digits (4 for int8 and fp4's last digit)
    assert est.gmse == pytest.approx(value, rel=2e-5 if name != "int8" else 2e-4)


def _closed_form_sparsity(s: float) -> float:
    t = stats.norm.ppf((1 + s) / 2)
    return (2 * stats.norm.cdf(t) - 1) - 2 * t * stats.norm.pdf(t)


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_sparsity_exact_and_monte_carlo_match_closed_form(percent):
    truth = _closed_form_sparsity(percent / 100)
    assert gmse_of(f"sparse-{percent}").gmse == pytest.approx(truth, rel=1e-9)
    # Per-row top-k over a finite row is biased by O(1/row_length) against the infinite-row
    # closed form (0.7% at 10% sparsity on rows of 4096): long rows make the bias negligible.
    mc = gmse_of(f"sparse-{percent}", method="monte-carlo", rel_err=2e-3, row_length=1 << 16)
    assert mc.ci_low - 1e-3 * truth <= truth <= mc.ci_high + 1e-3 * truth


@pytest.mark.parametrize("name", ["int2", "int4", "fp4", "ternary", "lloyd-max-3", "2:4"])
def test_monte_carlo_agrees_with_quadrature(name):
    exact = exact_gmse(resolve_format(name))
    mc = gmse_of(name, method="monte-carlo", rel_err=1e-3)
    # Per-row RMS over 4096 entries differs from the exact scale by O(1/4096); the quadrature is
    # the infinite-row limit, so allow that bias (a few 1e-4 relative) beside the 95% interval.
    slack = 5e-4 * exact
    assert mc.ci_low - slack <= exact <= mc.ci_high + slack
    assert mc.std_err <= 1e-3 * mc.gmse * 1.0001


def _quest_int_numpy(x: np.ndarray, bits: int, clip: float) -> np.ndarray:
    """QuEST's quantizer written from paper.md section 3, independently of gmse_cli."""
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
    s = clip * rms
    step = 2 * s / (2**bits - 1)
    k = np.clip(np.round((x + s) / step), 0, 2**bits - 1)  # levels -s, -s + step, ..., s
    return -s + k * step


def test_monte_carlo_matches_an_independent_quantizer():
    bank = SampleBank(seed=7)
    fmt = resolve_format("int3")
    errs, norms = [], []
    for i in range(4):
        x, n = bank.batch(i)
        y = _quest_int_numpy(x, 3, 2.0510683541)
        errs.append(((y - x) ** 2).sum())
        norms.append(n.sum())
    independent = sum(errs) / sum(norms)
    ours = sum(bank.batch_totals(fmt, i)[0] for i in range(4)) / sum(norms)
    assert ours == pytest.approx(independent, rel=1e-5)



def _pruned_energy_short_rows(row_length: int, sparsity: float) -> float:
    """GMSE of per-row magnitude pruning on rows of ``row_length``, by order statistics:
    an entry of magnitude r is among the k = round(s L) pruned iff at most k - 1 of the
    other L - 1 entries are smaller, so GMSE = int_0^inf r^2 2 phi(r) P[Bin(L-1, F(r)) <= k-1] dr,
    F(r) = 2 Phi(r) - 1 (scipy quadrature, independent of gmse_cli)."""
    from scipy import integrate

    k = math.floor(sparsity * row_length + 0.5)
    t = stats.norm.ppf((1 + sparsity) / 2)

    def integrand(r):
        return r * r * 2 * stats.norm.pdf(r) * stats.binom.cdf(k - 1, row_length - 1, 2 * stats.norm.cdf(r) - 1)

    return integrate.quad(integrand, 0, 12, points=[t], limit=200, epsabs=1e-13)[0]


def test_short_rows_run_the_real_compressor_not_the_infinite_row_limit():
    # Rows of 64: per-row RMS and per-row thresholds differ from their infinite-row limits by
    # ~5%, so the engine runs the real compressor; N:M has no per-row statistic and stays exact.
    rows = 64
    int4 = gmse_of("int4", row_length=rows)
    assert int4.method == "monte-carlo"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1 << 14, rows)).astype(np.float32)
    y = _quest_int_numpy(x, 4, 2.5139305786)  # paper.md's a_4
    err, norm = ((y - x) ** 2).sum(axis=1), (x.astype(np.float64) ** 2).sum(axis=1)
    independent = err.sum() / norm.sum()
    resid = err - independent * norm
    independent_se = math.sqrt((resid**2).sum() / (len(err) * (len(err) - 1))) / norm.mean()
    assert abs(int4.gmse - independent) <= 4 * math.hypot(int4.std_err, independent_se)
    assert int4.ci_high < 0.97 * PAPER_GMSE["int4"]  # the limit would be 5% off

    sparse = gmse_of("sparse-50", row_length=rows)
    truth = _pruned_energy_short_rows(rows, 0.5)
    assert sparse.method == "monte-carlo"
    assert sparse.ci_low <= truth <= sparse.ci_high
    assert truth > 1.04 * _closed_form_sparsity(0.5)

    assert gmse_of("2:4", row_length=rows).method == "exact"
    assert not has_exact(resolve_format("int4"), rows) and has_exact(resolve_format("int4"), 4096)
    assert has_exact(resolve_format("int4"))  # the limit exists; --exact still asks for it
    assert gmse_of("int4", row_length=rows, method="exact").gmse == pytest.approx(PAPER_GMSE["int4"], rel=2e-5)


def test_an_infinite_row_limit_kept_for_short_rows_is_not_served(_private_gmse_cache):
    from gmse_cli.gmse import lookup_gmse, remember_gmse
    from gmse_cli.gmse.estimates import make_estimate

    fmt = resolve_format("int4")
    # What an earlier uscl cached for rows of 256: the limit, labelled exact.
    remember_gmse(fmt, make_estimate(fmt, 256, exact_gmse(fmt), 0.0, "exact", 0), row_length=256, seed=0)
    assert lookup_gmse(fmt, row_length=256, rel_err=1e-3) is None
    assert estimate_gmse([fmt], row_length=256, cache="use")[0].method == "monte-carlo"


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 8, 15, 31, 63, 1000])
def test_t95_is_students_quantile(dof):
    assert t95(dof) == pytest.approx(stats.t.ppf(0.975, dof), rel=1.3e-3 if dof == 3 else 1.1e-4)


def test_monte_carlo_intervals_use_student_t_on_the_batch_count(_private_gmse_cache):
    # A format with a per-tensor statistic is measured by batch totals: 32 of them at the
    # minimum leave 31 degrees of freedom, and a 95% interval is then 2.04 standard errors
    # wide, not 1.96.
    fmt = resolve_format("int5-g512-sint8")  # Monte Carlo, outside the table; int8 scales per tensor
    (est,) = estimate_gmse([fmt], rel_err=0.5, cache="use")
    assert est.method == "monte-carlo" and est.samples == 32 * (1 << 17)
    half = stats.t.ppf(0.975, 31) * est.std_err
    assert est.ci_high - est.gmse == pytest.approx(half, rel=1e-5)
    assert est.gmse - est.ci_low == pytest.approx(half, rel=1e-5)
    (again,) = estimate_gmse([fmt], rel_err=0.5, cache="use")  # read back: the same interval
    assert again.method == "cache" and (again.ci_low, again.ci_high) == (est.ci_low, est.ci_high)
    diff = SampleBank(seed=0).difference(fmt, resolve_format("int4-g512"), rel_err=0.5)
    assert diff.ci_high - diff.difference == pytest.approx(stats.t.ppf(0.975, 31) * diff.std_err, rel=1e-5)


def test_independent_rows_are_the_units_of_the_ratio_estimator(_private_gmse_cache):
    # int3's rows are compressed independently, so they are i.i.d. and the standard error
    # comes from 128 row totals (4 batches of 32 rows of 4096), not 4 batch totals: the
    # estimate, its standard error and its interval recomputed here from QuEST's quantizer in
    # numpy and the textbook ratio estimator, of each row's error less its clipping energy
    # (entries beyond 2.0510683541 RMS(row), squared excess), whose exact mean is added back
    # (gmse_cli.gmse.clipping; that mean is checked by scipy in test_precision_monotone.py).
    bank = SampleBank(seed=7)
    errs, norms = [], []
    for i in range(4):
        x, _ = bank.batch(i)
        x64 = x.astype(np.float64)
        rms = np.sqrt((x64 * x64).mean(axis=1, keepdims=True))
        clipped = (np.maximum(np.abs(x64) - 2.0510683541 * rms, 0.0) ** 2).sum(axis=1)
        errs.append(((_quest_int_numpy(x, 3, 2.0510683541).astype(np.float64) - x64) ** 2).sum(axis=1) - clipped)
        norms.append((x64 * x64).sum(axis=1))
    e, n = np.concatenate(errs), np.concatenate(norms)
    g = e.sum() / n.sum()
    se = math.sqrt(((e - g * n) ** 2).sum() / (128 * 127)) / n.mean()
    g += ClipEnergy(2.0510683541).mean_per_entry(4096)
    est = bank.estimate(resolve_format("int3"), rel_err=0.5)
    assert est.samples == 4 * 32 * 4096
    assert est.gmse == pytest.approx(g, rel=1e-5)
    assert est.std_err == pytest.approx(se, rel=1e-3)
    assert est.ci_high - est.gmse == pytest.approx(stats.t.ppf(0.975, 127) * est.std_err, rel=1e-5)
    fmt = resolve_format("int5-g512")  # stored and read back: the same degrees of freedom
    (first,) = estimate_gmse([fmt], rel_err=0.5, cache="use")
    (again,) = estimate_gmse([fmt], rel_err=0.5, cache="use")
    assert first.method == "monte-carlo" and again.method == "cache"
    assert (again.ci_low, again.ci_high) == (first.ci_low, first.ci_high)


def test_hadamard_rotation_leaves_gmse_unchanged():
    bank = SampleBank(seed=3)
    diff = bank.difference(resolve_format("had128+int4"), resolve_format("int4"), rel_err=0.05)
    sigma = diff.std_err
    assert abs(diff.difference) <= 4 * sigma + 1e-12
    # and the two estimates agree with the quadrature value
    est = bank.estimate(resolve_format("had128+int4"))
    assert est.ci_low - 5e-4 * est.gmse <= PAPER_GMSE["int4"] <= est.ci_high + 5e-4 * est.gmse


def test_paired_difference_is_tighter_than_unpaired():
    bank = SampleBank(seed=11)
    # All three on the same 128 batches (a rel_err no run reaches): standard errors compared
    # on 16 batches, where the sampling stopped before, vary by ~25% between banks.
    same = dict(rel_err=1e-12, max_samples=128 * bank.batch_elements)
    # Similar formats share most of their error on common samples: the paired interval is
    # tighter than either estimate's, let alone the unpaired difference's.
    a, b = resolve_format("int4-g128"), resolve_format("int4-g64")
    diff = bank.difference(a, b, **same)
    ea, eb = bank.estimate(a, **same), bank.estimate(b, **same)
    assert diff.std_err < min(ea.std_err, eb.std_err)
    assert diff.ci_low > 0  # g128 is worse than g64, resolved
    # Dissimilar grids share less: what they shared was mostly their clipping, whose exact mean
    # now stands in for it in both (gmse_cli.gmse.clipping), so their rounding errors left on
    # common samples pair about as well as independent ones (5.2e-6 against 5.2e-6 here).
    a, b = resolve_format("fp4"), resolve_format("int4")
    diff = bank.difference(a, b, **same)
    ea, eb = bank.estimate(a, **same), bank.estimate(b, **same)
    assert diff.std_err < 1.1 * math.hypot(ea.std_err, eb.std_err)
    # fp4 is worse than int4 (paper: 0.012685 vs 0.011543), resolved by the paired interval
    assert diff.ci_low > 0


def test_rate_distortion_bound_over_the_whole_catalog():
    results = estimate_gmse(list(catalog().values()), rel_err=3e-3)
    for r in results:
        assert r.effective_bits is not None
        assert r.effective_bits <= r.bits_per_param + 0.01, r.name
        assert 0 < r.gmse < 1


def test_a_format_that_claims_too_few_bits_is_rejected(monkeypatch):
    fmt = resolve_format("int8")
    monkeypatch.setattr(type(fmt), "bits_per_param", lambda self, row_length=4096: 2.0)
    with pytest.raises(SpecError, match="rate-distortion"):
        gmse_of(fmt)


@pytest.mark.parametrize("name", ["sparse0.01", "sparse0.0000000001", "had8", "had8+4:4"])
def test_formats_without_a_quantizer_near_lossless_pass_the_bound(name):
    # Nothing is coded without a quantizer (kept values stay float32, or exact in the closed
    # form): pruning 0.01% leaves GMSE 5e-13, 1e-10 % leaves 5e-37, a rotation float32
    # round-off; all below 4^-16 and even 4^-32. None is a broken compressor.
    method = "auto" if name.startswith("sparse") else "monte-carlo"
    est = gmse_of(name, method=method, rel_err=1e-2)
    assert 0 < est.gmse < 4.0**-16
    if name == "sparse0.01":
        assert est.gmse == pytest.approx(_closed_form_sparsity(1e-4), rel=1e-6)


def test_seeded_and_reproducible():
    a = gmse_of("nvfp4", seed=5, rel_err=3e-3)
    b = gmse_of("nvfp4", seed=5, rel_err=3e-3)
    c = gmse_of("nvfp4", seed=6, rel_err=3e-3)
    assert a == b
    assert a.gmse != c.gmse
    assert abs(a.gmse - c.gmse) < 4 * math.hypot(a.std_err, c.std_err)


def test_bank_does_not_depend_on_access_order():
    one, two = SampleBank(seed=2), SampleBank(seed=2)
    x3 = one.batch(3)[0].copy()
    for i in range(4):
        two.batch(i)
    assert np.array_equal(two.batch(3)[0], x3)


def test_sample_count_adapts_to_rel_err():
    # (with its amax^2 control variate, int4-g128 meets 1e-3 at the 512-row minimum)
    loose = gmse_of("int4-g128", rel_err=1e-2)
    tight = gmse_of("int4-g128", rel_err=2e-4)
    assert tight.samples > loose.samples
    assert tight.std_err <= 2e-4 * tight.gmse


def test_stage_gmse_splits_composites():
    parts = stage_gmse("2:4+int4")
    assert [f for f, _ in parts] == ["sparsity", "quantization"]
    assert parts[1][1].gmse == pytest.approx(PAPER_GMSE["int4"], rel=2e-5)


def test_exact_availability():
    assert has_exact(resolve_format("int4")) and has_exact(resolve_format("had128+int4"))
    assert not has_exact(resolve_format("mxfp4")) and not has_exact(resolve_format("2:4+int4"))
    with pytest.raises(SpecError, match="no exact GMSE"):
        gmse_of("mxfp4", method="exact")


def test_rms_scales_stored_in_e8m0_have_no_exact_gmse():
    # c * RMS rounded to a power of two: int4's c = 2.514 becomes 2 on every Gaussian row of
    # 4096 (RMS 1 +- 0.011), so the GMSE is the quadrature at scale 2, not at c (0.01154).
    fmt = resolve_format("int4-se8m0")
    assert not has_exact(fmt)
    with pytest.raises(SpecError, match="no exact GMSE"):
        gmse_of(fmt, method="exact")
    est = gmse_of(fmt, rel_err=3e-3)
    assert est.method == "monte-carlo"
    c = 2.0 ** round(math.log2(2.5139305786))
    truth = 2 * sum(  # E[(x - Q(x))^2] for 16 midrise levels at +-c(2j + 1)/15, by quadrature
        _cell_mse(c * (2 * j + 1) / 15, c * 2 * j / 15 if j else 0.0, c * (2 * j + 2) / 15 if j < 7 else math.inf)
        for j in range(8)
    )
    assert est.ci_low - 2e-3 * truth <= truth <= est.ci_high + 2e-3 * truth
    assert abs(est.gmse - PAPER_GMSE["int4"]) > 0.3 * PAPER_GMSE["int4"]
    # on a step of the rounding (Lloyd-Max's c = 1 with rceil), rows fall on either side
    assert not has_exact(resolve_format("lm2-se8m0-rceil"))



def test_rms_scales_stored_in_e4m3_have_no_exact_gmse():
    # NVFP4's two-level scale: s_t = float32(max raw scale of the tensor / 448), each row's
    # scale stored as e4m3(raw / s_t) (3 mantissa bits). Written here from that rule with
    # ml_dtypes, on QuEST's int4 grid, over tensors of 32 rows of 4096 like the bank's.
    import ml_dtypes

    fmt = resolve_format("int4-se4m3")
    assert not has_exact(fmt) and not has_exact(resolve_format("sint4-rms-se4m3"))
    assert has_exact(resolve_format("int4-sbf16")) and has_exact(resolve_format("int4-sint8"))
    est = gmse_of(fmt)
    assert est.method == "monte-carlo"
    rng = np.random.default_rng(11)
    errs, norms = [], []
    for _ in range(64):
        x = rng.standard_normal((32, 4096)).astype(np.float32)
        raw = 2.5139305786 * np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1))
        s_t = np.float32(raw.max() / 448.0)
        scale = (raw / s_t).astype(np.float32).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * s_t
        step = 2 * scale[:, None] / 15
        y = -scale[:, None] + np.clip(np.round((x + scale[:, None]) / step), 0, 15) * step
        errs.append(((y - x) ** 2).sum())
        norms.append((x.astype(np.float64) ** 2).sum())
    errs, norms = np.array(errs), np.array(norms)
    independent = errs.sum() / norms.sum()
    resid = errs - independent * norms
    se = math.sqrt((resid**2).sum() / (len(errs) * (len(errs) - 1))) / norms.mean()
    assert abs(est.gmse - independent) <= 4 * math.hypot(est.std_err, se)

def test_rms_constant_rounded_by_a_bf16_scale_is_measured_not_its_quadrature():
    # int4 at c = 1.51 with bf16 scales: the stored scale is bf16(1.51 * RMS), and as rows grow
    # RMS -> 1 and the scale -> bf16(1.51) = 1.5078125, whose quadrature (0.047713) is 0.5%
    # above the quadrature at 1.51 (0.047472) that the exact path used to report, with no
    # error bar, at any row length. QuEST's int4 constant moves by 3e-6 and stays exact.
    import ml_dtypes

    fmt = resolve_format("int4-rms1.51-sbf16")
    assert not has_exact(fmt)
    assert has_exact(resolve_format("int4-sbf16")) and has_exact(resolve_format("int4-rms1.51"))
    stored = float(np.float32(1.51).astype(ml_dtypes.bfloat16))
    assert stored == 1.5078125
    limit = 2 * sum(  # 16 midrise levels at +-s(2j + 1)/15, cells split at +-s * 2j/15
        _cell_mse(stored * (2 * j + 1) / 15, stored * 2 * j / 15 if j else 0.0,
                  stored * (2 * j + 2) / 15 if j < 7 else math.inf)
        for j in range(8)
    )
    est = gmse_of(fmt, row_length=1 << 20, max_samples=1 << 24, seed=3)
    assert est.method == "monte-carlo"
    assert abs(est.gmse - limit) <= 4 * est.std_err + 1e-4 * limit, (est.gmse, est.std_err, limit)


def _cell_mse(level: float, lo: float, hi: float) -> float:
    """E[(x - level)^2; lo < x < hi] for x standard normal (scipy's quadrature)."""
    from scipy import integrate

    return integrate.quad(lambda x: (x - level) ** 2 * stats.norm.pdf(x), lo, hi)[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rel_err": 0}, "^rel_err=0 must be a positive"),
        ({"rel_err": -1e-3}, "must be a positive"),
        ({"row_length": 100}, "does not divide the row length 100"),
        ({"method": "guess"}, "unknown method"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(SpecError, match=message):
        estimate_gmse(["int4-g128"], **kwargs)


def test_one_format_alone_is_a_list_of_one():
    # Regression: a bare name is a str, a sequence too: it was read a character at a time
    # ("unknown format 'i'").
    alone, listed = estimate_gmse("int4")[0], estimate_gmse(["int4"])[0]
    assert alone == listed and alone.name == "int4"
    assert estimate_gmse(resolve_format("int8"), method="exact") == estimate_gmse(["int8"], method="exact")

