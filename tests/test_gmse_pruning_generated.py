"""The pruned-energy control variate on generated pruned and quantized formats: agreement with
the plain ratio estimate on the same rows, truths derived independently, calibration against a
measured truth, and the edge cases that must stay finite.

Truths used here, derived by hand or by a second computation (not from the code):

- The GMSE of keeping the ``n`` largest of ``m`` units of ``k`` i.i.d. N(0, 1) entries (ranked
  by L2 norm): a unit of energy ``r^2`` is dropped iff at most ``m - n - 1`` of the other
  ``m - 1`` units are smaller, each with probability ``u = F(r^2)``, the chi2_k CDF. Writing
  the integral over ``u`` (``r^2 = chi2_k.ppf(u)``, ``dr f(r) = du``):
  ``GMSE = (1/k) int_0^1 chi2_k.ppf(u) P[Binomial(m - 1, u) <= m - n - 1] du``, by scipy's
  adaptive quadrature with breakpoints around the binomial step (:func:`_dropped_per_entry`).
- 2:4x2: a block's energy is chi2_2, an exponential of mean 2; the two smallest of four
  exponentials have means 2/4 and 2/4 + 2/3, so 5/3 of a group's 8 entries' energy is
  dropped: GMSE = 5/24.
- Pruning then an exact cast (fp32) errs by exactly the dropped energy: the pruning's GMSE.
- Pruning then ``fint4-g1``: each kept entry is its own group's amax, mapped to +-7.5 steps,
  half a step from the nearest level: it errs by |x| / 15. GMSE = P + (1 - P) / 225, P the
  pruning's GMSE.
- Pruning then ``sint8-g1``: each kept entry is a grid point; GMSE = P up to float32 rounding.
- Everything pruned (keep 0): the error is the row itself, GMSE = 1.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from gmse_cli.compress.sparsity_gmse import nm_gmse
from gmse_cli.gmse import SampleBank
from gmse_cli.gmse.bank import _ratio_estimate
from gmse_cli.gmse.control import controls_for, expected_per_row
from gmse_cli.spec import resolve_format


def _dropped_per_entry(keep: int, units: int, unit: int) -> float:
    """GMSE of keeping the largest ``keep`` of ``units`` units of ``unit`` entries: the
    integral over the CDF value u in the module docstring, split around the binomial step."""
    if keep == units:
        return 0.0
    p0 = (units - keep - 0.5) / (units - 1)
    sd = math.sqrt(max(p0 * (1 - p0), 1e-12) / (units - 1))
    steps = {min(max(p0 + j * sd, 0.0), 1.0) for j in range(-12, 13)}
    edges = sorted(steps | {0.0, 1.0})

    def integrand(u: float) -> float:
        tail = special.bdtr(units - keep - 1, units - 1, u)
        return 0.0 if tail == 0.0 else stats.chi2.ppf(u, unit) * tail

    total = sum(integrate.quad(integrand, a, b, epsabs=1e-16, epsrel=1e-13, limit=200)[0]
                for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a)
    return total / unit


def _half_up(fraction: float, n: int) -> int:
    return min(n, max(0, math.floor(fraction * n + 0.5)))


def _pruning_truth(pruning: str, row_length: int) -> float:
    """The pruning's GMSE at ``row_length`` from its shorthand (sparseP, blockK-P, N:M[xK]),
    counted as the README says (round half up)."""
    if pruning.startswith("sparse"):
        density = 1 - float(pruning[len("sparse"):]) / 100
        return _dropped_per_entry(_half_up(density, row_length), row_length, 1)
    if pruning.startswith("block"):
        k, p = pruning[len("block"):].split("-")
        blocks = row_length // int(k)
        return _dropped_per_entry(blocks - _half_up(float(p) / 100, blocks), blocks, int(k))
    n, rest = pruning.split(":")
    m, _, k = rest.partition("x")
    return _dropped_per_entry(int(n), int(m), int(k or 1))


def _sound(est) -> bool:
    values = (est.gmse, est.std_err, est.ci_low, est.ci_high)
    return all(math.isfinite(v) for v in values) and est.std_err > 0 and est.ci_low <= est.gmse <= est.ci_high


# -- nm_gmse against the quadrature over the CDF value -------------------------------------------


@pytest.mark.parametrize(("keep", "units", "unit"), [
    (32, 64, 1), (1, 64, 1), (63, 64, 1), (2048, 4096, 1), (1, 4096, 1), (4095, 4096, 1),
    (4094, 4096, 1), (100, 8192, 1), (8000, 8192, 1), (8191, 8192, 1), (300, 512, 8),
    (1000, 1024, 3), (5, 4096, 2), (4096, 8192, 5), (695, 2257, 1), (1326, 2155, 7),
    (6480, 6607, 4), (511, 512, 8), (1, 512, 8), (3, 1000, 6),
])
def test_nm_gmse_of_row_wide_groups(keep, units, unit):
    """Row-wide groups make the binomial factor a narrow step, or (keeping or dropping a few
    units) a Poisson-like one with an exponential tail: nm_gmse lost 0.4% of the GMSE of
    keeping 4095 of 4096 (0.6% for 8191 of 8192) where its panels stopped refining."""
    truth = _dropped_per_entry(keep, units, unit)
    assert nm_gmse(keep, units, unit) == pytest.approx(truth, rel=1e-9, abs=1e-15)


def test_two_of_four_pairs_closed_form():
    assert _dropped_per_entry(2, 4, 2) == pytest.approx(5 / 24, rel=1e-12)
    assert nm_gmse(2, 4, 2) == pytest.approx(5 / 24, rel=1e-12)


# -- agreement with the ratio estimate on generated formats ---------------------------------------

_QUANTIZERS = ["int{b}-{g}-rms", "int{b}-{g}-absmax", "sint{b}-{g}", "fint{b}-{g}", "aint{b}-{g}",
               "e2m1-{g}-rms", "e4m3-{g}-absmax", "e3m2-{g}-rms", "lut[-1.5,-0.5,0,0.5,1.5]-{g}-rms1.5",
               "lm{b3}-{g}", "vq2-b2"]


def _generated(count: int, seed: int) -> list[tuple[str, int]]:
    """(format, row length): N:MxK (M 2..64, K 1..8), row-wise magnitude (5-95%) or block
    pruning, then a scalar grid (rms or absmax scales, groups 16..row) or VQ."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    while len(out) < count:
        kind = rng.integers(3)
        if kind == 0:
            m, k = int(rng.integers(2, 65)), int(rng.integers(1, 9))
            n = int(rng.integers(1, m + 1))
            length = m * k * max(1, -(-64 // (m * k))) * int(2 ** rng.integers(0, 4))
            pruning = f"{n}:{m}" + (f"x{k}" if k > 1 else "")
        elif kind == 1:
            length = int(2 ** rng.integers(6, 17))
            pruning = f"sparse{round(float(rng.uniform(5, 95)), 1)}"
        else:
            length = int(2 ** rng.integers(6, 17))
            pruning = f"block{int(2 ** rng.integers(0, 4))}-{int(rng.integers(5, 96))}"
        if length > 65536:
            continue
        group = [16, 32, 64, 128, 256, "row"][rng.integers(6)]
        group = "row" if group == "row" or group > length or length % group else f"g{group}"
        quantizer = _QUANTIZERS[rng.integers(len(_QUANTIZERS))].format(
            b=int(rng.integers(2, 9)), b3=int(rng.integers(2, 5)), g=group)
        if quantizer.startswith("vq") and length % 2:
            continue
        out.append((f"{pruning}+{quantizer}", length))
    return out


def _paired_std_err(errors, norms, stats, means, row_length, ratio):
    """(intercept / row length, standard error of it minus the ratio estimate): an ordinary
    least-squares fit of the row errors on [1, norm - L, stats - means] written here, and the
    spread over rows of what the fit subtracts from the ratio estimate (its coefficients on the
    centred columns, the norm's less the ratio)."""
    centred = stats - means
    x = np.column_stack([np.ones(len(errors)), norms - row_length, centred])
    coef = np.linalg.lstsq(x, errors, rcond=None)[0]
    subtracted = centred @ coef[2:] + (coef[1] - ratio) * (norms - row_length)
    return coef[0] / row_length, subtracted.std(ddof=1) / math.sqrt(len(errors)) / row_length


# 24 formats at 64..65536 entries a row (18 regressed, 6 with too few rows or a weak control);
# a scratch run of 300 more on their own seeds: 250 regressed, max |z| 2.61, rms 1.05, 5.6% beyond 1.96
@pytest.mark.parametrize(("name", "row_length"), _generated(24, seed=7))
def test_generated_pruned_formats_agree_with_the_ratio_estimate(name, row_length):
    """On the same rows, the regression and the ratio of sums estimate the same GMSE; they
    differ by what the controls subtract, whose standard error is measured over the rows."""
    fmt = resolve_format(name)
    controls = controls_for(fmt, row_length)
    assert "pruned2" in [c.kind for c in controls]
    bank = SampleBank(seed=sum(map(ord, name)), row_length=row_length)
    est = bank.estimate(fmt, rel_err=1e-3, max_samples=1 << 19)
    errors, norms, batches = bank.run(fmt, rel_err=0.0, max_samples=est.samples)
    g, se = _ratio_estimate(errors, norms)
    assert _sound(est), name
    if (est.gmse, est.std_err) == pytest.approx((g, se), rel=1e-9):
        return  # too few rows for the regression, or a control dropped (< 1.5x at 512 rows)
    stats = np.concatenate([bank.control_rows(i, controls) for i in range(batches)])
    means = np.array([_control_mean(c, row_length) for c in controls])
    intercept, paired = _paired_std_err(errors, norms, stats, means, row_length, g)
    assert est.gmse == pytest.approx(intercept, rel=1e-9), name
    assert est.std_err <= se * 1.05, name
    assert abs(est.gmse - g) <= 4 * paired, name


def _control_mean(control, row_length: int) -> float:
    """The pruned energy's mean by the quadrature here; the quantizer statistics' by the code
    (checked against closed forms in test_gmse_control.py)."""
    if control.pruning is None:
        return expected_per_row(control, row_length)
    keep, units, unit = control.pruning.kept_units(row_length)
    return row_length * _dropped_per_entry(keep, units, unit)


# -- independent truths ---------------------------------------------------------------------------


@pytest.mark.parametrize(("pruning", "row_length"), [
    ("2:4", 64), ("2:4x2", 256), ("1:8x4", 128), ("7:64x3", 192), ("sparse50", 4096),
    ("sparse95", 1024), ("sparse0.1", 4096), ("sparse30", 65536), ("block4-30", 512), ("block8-75", 2048),
])
@pytest.mark.parametrize("quantizer", ["fp32", "sint8-g1", "fint4-g1"])
def test_pruning_then_known_quantizer(pruning, row_length, quantizer):
    """The error on the kept entries is known exactly (module docstring): the estimate holds
    the truth in its interval, however narrow the near-perfect control makes it."""
    p = _pruning_truth(pruning, row_length)
    truth = p + (1 - p) / 225 if quantizer == "fint4-g1" else p
    est = SampleBank(seed=5, row_length=row_length).estimate(resolve_format(f"{pruning}+{quantizer}"),
                                                              rel_err=1e-3, max_samples=1 << 18)
    assert _sound(est)
    # The interval is of the float32 format's GMSE, narrower than the float32 rounding of the
    # kept entries: 2^-48 of their energy for a grid point (sint8-g1); for fint4-g1 the output
    # is rounded to 2^-24 of |x|, 15 x 2^-24 of an error of |x| / 15, twice that squared (3e-7
    # of the quantization's part measured).
    rounding = 1e-14 + 30 * 2.0**-24 * (truth - p)
    assert abs(est.gmse - truth) <= 4 * est.std_err + rounding


def test_pruning_then_a_fine_grid():
    """int16 with an rms scale adds ~1e-9 of rounding error to the kept entries, no more."""
    truth = 5 / 24
    est = SampleBank(seed=5, row_length=256).estimate(resolve_format("2:4x2+int16-g64-rms"), rel_err=1e-3)
    assert _sound(est) and -4 * est.std_err <= est.gmse - truth <= 1e-7


# -- calibration ----------------------------------------------------------------------------------


def test_calibration_against_a_measured_truth():
    """Over 80 seeds the standardized errors against a truth measured on another seed to 1e-5
    spread like N(0, 1) (the long run: 200 seeds each of sparse-50+int4 at 4096, 2:4x2+int4 at
    256, sparse30+sint4-g128 at 1024: spreads 1.004, 1.009, 0.967, coverage 0.965, 0.955, 0.965)."""
    fmt = resolve_format("2:4x2+int4")
    truth = SampleBank(seed=10**6, row_length=256).estimate(fmt, rel_err=1e-5, max_samples=1 << 27)
    assert truth.std_err <= 2e-5 * truth.gmse
    z, covered = [], 0
    for seed in range(80):
        est = SampleBank(seed=100 + seed, row_length=256).estimate(fmt, rel_err=1e-3)
        z.append((est.gmse - truth.gmse) / est.std_err)
        covered += est.ci_low <= truth.gmse <= est.ci_high
    z = np.array(z)
    assert 0.8 <= z.std(ddof=1) <= 1.25 and abs(z.mean()) <= 0.4
    assert covered >= 70  # 95% of 80 is 76, with a binomial sd of 1.9


# -- edge cases -----------------------------------------------------------------------------------


def test_perfect_control_keeps_a_positive_standard_error():
    """Keeping 1 of 64 then sint4-g16: the kept entry is its group's amax, a grid point, so
    the error is the dropped energy to the last bit: the residual was 0 and the standard error
    exactly 0 (an interval of no width)."""
    est = SampleBank(seed=1, row_length=64).estimate(resolve_format("sparse99+sint4-g16"), rel_err=1e-3)
    assert _sound(est)
    assert abs(est.gmse - _dropped_per_entry(1, 64, 1)) <= 4 * est.std_err + 1e-14


@pytest.mark.parametrize("name", ["block8-95+int4", "sparse99.5+int4", "sparse99.5+sint4-g16"])
def test_keeping_nothing(name):
    """Keeping 0 of a row of 64 asked nm_gmse for keep = 0 (SpecError) before; now no control,
    and the GMSE is the row's own: 1."""
    fmt = resolve_format(name)
    assert "pruned2" not in [c.kind for c in controls_for(fmt, 64)]
    est = SampleBank(seed=2, row_length=64).estimate(fmt, rel_err=1e-3)
    assert est.gmse == pytest.approx(1.0, rel=1e-12) and math.isfinite(est.std_err)


def test_keeping_everything_is_the_quantizer_alone():
    bank = SampleBank(seed=2, row_length=16)
    fmt = resolve_format("sparse1+sint4-g16")  # keeps round(15.84) = 16 of 16
    assert "pruned2" not in [c.kind for c in controls_for(fmt, 16)]
    est, plain = bank.estimate(fmt, rel_err=1e-3), bank.estimate(resolve_format("sint4-g16"), rel_err=1e-3)
    assert (est.gmse, est.std_err) == (plain.gmse, plain.std_err)


@pytest.mark.parametrize(("name", "row_length"), [
    ("2:4+int4", 4), ("1:2x2+int4", 4), ("sparse50+sint4-g4", 4), ("sparse25+int4", 8),
    ("block2-50+e2m1-row-rms", 8), ("3:4+aint3-g4", 4), ("sparse0.1+int4", 4096),
])
def test_tiny_rows_and_nearly_full_rows(name, row_length):
    fmt = resolve_format(name)
    bank = SampleBank(seed=4, row_length=row_length)
    est = bank.estimate(fmt, rel_err=1e-3, max_samples=1 << 19)
    errors, norms, _ = bank.run(fmt, rel_err=0.0, max_samples=est.samples)
    g, se = _ratio_estimate(errors, norms)
    # 128 rows of 4096 keeping 4092: a control that explains nothing costs a degree of freedom
    # (1.3% on the standard error), its 1.5x test waiting for 512 rows
    assert _sound(est) and est.std_err <= 1.05 * se
    assert abs(est.gmse - g) <= 4 * max(math.sqrt(max(se**2 - est.std_err**2, 0.0)), 0.1 * se)


def test_no_control_after_a_rotation_or_across_rows():
    pruned = resolve_format("sparse50+int4")
    tensor_pruned = pruned.model_copy(update={"stages": (pruned.stages[0].model_copy(update={"granularity": "tensor"}),
                                                          *pruned.stages[1:])})
    for fmt in (resolve_format("had64+2:4+int4"), resolve_format("sparse50+int4-tensor"), tensor_pruned):
        assert controls_for(fmt, 64) == ()
    bank = SampleBank(seed=3, row_length=64)
    fmt = resolve_format("had64+2:4+int4")
    est = bank.estimate(fmt, rel_err=1e-3)
    errors, norms, _ = bank.run(fmt, rel_err=0.0, max_samples=est.samples)
    assert _sound(est) and (est.gmse, est.std_err) == pytest.approx(_ratio_estimate(errors, norms), rel=1e-12)


@pytest.mark.parametrize(("a", "b"), [
    ("2:4+int4", "2:4+int4"),  # the same format: exactly 0
    ("2:4+int4", "int4"),  # only one side pruned
    ("sparse50+int4", "2:4+int4"),  # both pruned, different masks
    ("2:4x2+fp32", "2:4x2+sint8-g1"),  # both near-perfect controls
    ("sparse50+int4", "sparse50+int4-tensor"),  # a per-tensor side: batches are the units
])
def test_differences_with_pruned_formats(a, b):
    bank = SampleBank(seed=6, row_length=64)
    fa, fb = resolve_format(a), resolve_format(b)
    d = bank.difference(fa, fb, rel_err=1e-4, max_samples=1 << 20)
    values = (d.difference, d.std_err, d.ci_low, d.ci_high)
    assert all(math.isfinite(v) for v in values) and d.ci_low <= d.difference <= d.ci_high
    if a == b:
        assert d.difference == 0.0
        return
    assert d.std_err > 0
    ga = bank.estimate(fa, rel_err=0.0, max_samples=d.samples)
    gb = bank.estimate(fb, rel_err=0.0, max_samples=d.samples)
    assert abs(d.difference - (ga.gmse - gb.gmse)) <= 4 * math.hypot(ga.std_err, gb.std_err) + 1e-13


@pytest.mark.parametrize(("name", "truth"), [
    ("2:4x2+fp32", 5 / 24), ("2:4x2+fint4-g1", 5 / 24 + (19 / 24) / 225), ("sparse99.5+int4", 1.0),
])
def test_command_line(run_cli, tmp_path, monkeypatch, name, truth):
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    res = run_cli("gmse", name, "--monte-carlo", "--json", "--row-length", "64", "--rel-err", "1e-3")
    assert res.code == 0
    (row,) = json.loads(res.stdout)["results"]
    assert row["gmse_method"] == "monte-carlo"
    # float32 rounding of fint4's codes moves the GMSE by ~5e-9 of itself (see above)
    assert row["gmse_low"] - 1e-8 * truth <= truth <= row["gmse_high"] + 1e-8 * truth
    assert row["gmse_std_err"] < 1e-6 * truth
