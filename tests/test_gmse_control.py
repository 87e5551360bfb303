"""Control variates of the Monte Carlo GMSE (gmse/control.py) against independent derivations.

The exact expectations are checked against scipy quadrature of the *density* of each group
statistic (the module integrates its survival function), the regression estimator against the
textbook normal equations, and the bank's estimates against the shipped table and against the
plain ratio estimate on the same rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from gmse_cli.gmse import SampleBank, lookup_gmse
from gmse_cli.gmse.bank import _ratio_estimate, _worth_keeping
from gmse_cli.gmse.control import (
    Control,
    RegressionSums,
    control_rows,
    controls_for,
    expected_per_row,
    regression_estimate,
)
from gmse_cli.spec import resolve_format


def _density_moment(group: int, kind: str) -> float:
    """E[statistic] from the density of the group maximum, by adaptive quadrature."""
    if kind == "hi2":  # max(0, max x)^2: density of max x is g Phi^(g-1) phi on x > 0
        def dens(x):
            return group * stats.norm.cdf(x) ** (group - 1) * stats.norm.pdf(x)
    else:  # max |x|: |x| has cdf 2 Phi - 1 and density 2 phi
        def dens(x):
            return group * (2 * stats.norm.cdf(x) - 1) ** (group - 1) * 2 * stats.norm.pdf(x)
    if kind == "pow2":
        total = 0.0
        for k in range(-30, 7):
            lo, hi = 2.0**k, 2.0 ** (k + 1)
            total += 4.0**k * integrate.quad(dens, lo, hi, epsabs=1e-15, epsrel=1e-11, limit=200)[0]
        return total
    return integrate.quad(lambda x: x * x * dens(x), 0, 40, epsabs=0, epsrel=1e-13, limit=400, points=[2, 4, 6])[0]


@pytest.mark.parametrize("group", [1, 2, 32, 64, 128, 4096])
@pytest.mark.parametrize("kind", ["amax2", "pow2", "hi2"])
def test_expectations_match_density_quadrature(group, kind):
    got = expected_per_row(Control(group, kind), group)
    assert got == pytest.approx(_density_moment(group, kind), rel=1e-9)


def _density_saturation(group: int, top: float) -> float:
    """E[max(0, M - top 2^floor(log2 M))^2] for M the largest |entry|, binade by binade from
    the density of M, by adaptive quadrature."""
    def dens(x):
        return group * (2 * stats.norm.cdf(x) - 1) ** (group - 1) * 2 * stats.norm.pdf(x)

    total = 0.0
    for k in range(-30, 7):
        t, b = top * 2.0**k, 2.0 ** (k + 1)
        total += integrate.quad(lambda m, t=t: (m - t) ** 2 * dens(m), t, b, epsabs=1e-16, epsrel=1e-11, limit=200)[0]
    return total


@pytest.mark.parametrize("group", [2, 32, 64])
@pytest.mark.parametrize("top", [1.5, 1.75, 1.875])  # e2m1, e4m3 and e3m2, e2m3
def test_saturation_expectation_matches_density_quadrature(group, top):
    got = expected_per_row(Control(group, "clip2", top), group)
    assert got == pytest.approx(_density_saturation(group, top), rel=1e-9)


def test_expectations_closed_forms():
    # one entry: E[x^2] = 1, E[max(0, x)^2] = 1/2
    assert expected_per_row(Control(1, "amax2"), 1) == pytest.approx(1.0, rel=1e-12)
    assert expected_per_row(Control(1, "hi2"), 1) == pytest.approx(0.5, rel=1e-12)
    assert expected_per_row(Control(1, "lo2"), 1) == pytest.approx(0.5, rel=1e-12)
    # two entries: max(|x1|, |x2|)^2 has mean 1 + 2/pi (E[max(a, b)^2] for i.i.d. chi(1)s)
    assert expected_per_row(Control(2, "amax2"), 2) == pytest.approx(1 + 2 / math.pi, rel=1e-12)
    # a row of 4096 holds 4096 / g groups
    assert expected_per_row(Control(128, "amax2"), 4096) == pytest.approx(32 * expected_per_row(Control(128, "amax2"), 128))


def test_control_rows_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    x[0, :32] = 0.0  # a group of zeros: pow2 statistic 0, not 2^-1075
    controls = (Control(32, "amax2"), Control(32, "pow2"), Control(64, "hi2"), Control(64, "lo2"))
    got = control_rows(x, controls)
    g32 = np.abs(x.astype(np.float64)).reshape(5, 8, 32).max(-1)
    p2 = np.where(g32 > 0, 2.0 ** np.floor(np.log2(np.where(g32 > 0, g32, 1.0))), 0.0)
    g64 = x.astype(np.float64).reshape(5, 4, 64)
    hi, lo = np.maximum(g64.max(-1), 0), np.minimum(g64.min(-1), 0)
    want = np.column_stack([(g32**2).sum(1), (p2**2).sum(1), (hi**2).sum(1), (lo**2).sum(1)])
    np.testing.assert_allclose(got, want, rtol=1e-15)


def test_saturation_rows_match_numpy():
    rng = np.random.default_rng(5)
    x = (2.5 * rng.standard_normal((6, 128))).astype(np.float32)
    x[1, :32] = 0.0  # a group of zeros saturates nothing
    x[2, :32] = 0.0
    x[2, 5] = 7.0  # a top exactly on 1.75 * 4: no excess; and one just above it
    x[2, 40] = np.float32(7.25)
    got = control_rows(x, (Control(32, "clip2", 1.75),))[:, 0]
    a = np.abs(x.astype(np.float64)).reshape(6, 4, 32).max(-1)
    floor = np.where(a > 0, 2.0 ** np.floor(np.log2(np.where(a > 0, a, 1.0))), 0.0)
    want = (np.maximum(a - 1.75 * floor, 0.0) ** 2).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert want[1] == 0.0 and want[2] == pytest.approx(0.25**2 + (np.maximum(a[2, 2:] - 1.75 * floor[2, 2:], 0) ** 2).sum())


def test_regression_matches_normal_equations():
    rng = np.random.default_rng(11)
    rows, length = 400, 4096
    norms = length + 90 * rng.standard_normal(rows)
    stats_ = 260 + 20 * rng.standard_normal((rows, 2))
    means = np.array([260.0, 258.0])
    errors = 55 + 0.013 * (norms - length) + 0.4 * (stats_[:, 0] - 260) + rng.standard_normal(rows)
    g, se, dof = regression_estimate(errors, norms, stats_, means, length)
    x = np.column_stack([np.ones(rows), norms - length, stats_ - means])
    inv = np.linalg.inv(x.T @ x)
    beta = inv @ x.T @ errors
    s2 = ((errors - x @ beta) ** 2).sum() / (rows - 4)
    assert dof == rows - 4
    assert g == pytest.approx(beta[0] / length, rel=1e-12)
    assert se == pytest.approx(math.sqrt(s2 * inv[0, 0]) / length, rel=1e-10)


def test_regression_needs_rows():
    assert regression_estimate(np.ones(20), np.full(20, 64.0), np.ones((20, 2)), np.ones(2), 64) is None


@pytest.mark.parametrize(("name", "kinds"), [
    ("int4-g128", ("amax2",)), ("int4-asym-g128", ("hi2", "lo2")), ("mxint8", ("amax2", "pow2")),
    ("nf4", ()), ("mxfp4", ()), ("mxfp8-e4m3", ("amax2", "pow2", "clip2")), ("mxfp6-e2m3", ()),
    ("mxfp8-e5m2", ()), ("e4m3-g16-absmax-se8m0", ("amax2", "pow2", "clip2")), ("e4m3-g16-se8m0", ()),
    ("mxfp4-rceil", ()), ("mxfp4-even", ()), ("fp4", ()), ("int4", ()), ("had128+sint4-g128", ()), ("sparse30+sint4-g128", ("pruned2", "amax2")), ("vq4-b1", ()), ("nvfp4", ()), ("2:4", ()),
    ("2:4+int4", ("pruned2",)), ("2:4x2+int4", ("pruned2",)), ("had128+2:4x2+int4-allstats", ()), ("2:4+nvfp4", ()),
])
def test_controls_follow_the_scale(name, kinds):
    assert tuple(c.kind for c in controls_for(resolve_format(name), 4096)) == kinds


@pytest.mark.parametrize(("name", "seed", "factor"), [
    ("int4-g128", 21, 2.0), ("int4-asym-g128", 21, 2.0), ("mxint8", 21, 2.0), ("mxfp8-e4m3", 22, 1.6),
    ("sparse-50+int4", 23, 6.0), ("2:4+int4", 23, 10.0),
])
def test_bank_estimate_with_controls(name, seed, factor):
    """The regression estimate agrees with the shipped table (measured to 1e-4 on its own seed)
    and, on the same rows, has the variance reduction the controls promise: a
    standard error ``factor`` times below the ratio estimate's (about 3.3x for amax^2 with
    symmetric grids, 2.6x with asymmetric ones, 2x for mxfp8-e4m3's saturated tops, 6-10x
    for the energy a pruning drops, which explains 137x and 297x of the variance at 4,096 rows)."""
    fmt = resolve_format(name)
    bank = SampleBank(seed=seed)
    est = bank.estimate(fmt, rel_err=1e-3)
    table = lookup_gmse(fmt, row_length=4096, rel_err=1e-4)
    assert table is not None and table.method == "table"
    assert abs(est.gmse - table.gmse) <= 4 * math.hypot(est.std_err, table.std_err)
    errors, norms, _ = bank.run(fmt, rel_err=0.0, max_samples=est.samples)
    g = errors.sum() / norms.sum()
    resid = errors - g * norms
    ratio_se = math.sqrt((resid**2).sum() / (len(errors) * (len(errors) - 1))) / norms.mean()
    assert est.std_err < ratio_se / factor


def test_variance_reduction_matches_two_least_squares_fits():
    rng = np.random.default_rng(12)
    rows, length = 600, 4096
    norms = length + 90 * rng.standard_normal(rows)
    stats_ = 260 + 20 * rng.standard_normal((rows, 2))
    errors = 55 + 0.013 * (norms - length) + 0.4 * (stats_[:, 0] - 260) + 3 * rng.standard_normal(rows)
    sums = RegressionSums(np.array([260.0, 258.0]), length)
    sums.add(errors, norms, stats_)
    full = np.column_stack([np.ones(rows), norms - length, stats_])
    rss = [np.sum((errors - x @ np.linalg.lstsq(x, errors, rcond=None)[0]) ** 2) for x in (full[:, :2], full)]
    assert sums.variance_reduction() == pytest.approx(rss[0] / rss[1], rel=1e-9)


def test_statistics_that_do_not_pay_are_dropped_at_512_rows():
    """A statistic explaining little is dropped once 512 rows show it (the ratio estimate and no
    statistics from there on); one explaining much is kept."""
    rng = np.random.default_rng(4)
    length = 4096

    def batches(weight):
        sums = RegressionSums(np.array([0.0]), length)
        kept = []
        for _ in range(20):  # 32 rows a batch: the decision falls at batch 16
            norms = length + 90 * rng.standard_normal(32)
            stat = rng.standard_normal((32, 1))
            errors = 50 + 0.01 * (norms - length) + weight * stat[:, 0] + rng.standard_normal(32)
            sums = _worth_keeping(sums, errors, norms, stat) if sums is not None else None
            kept.append(sums is not None)
        return kept

    assert batches(0.0) == [True] * 15 + [False] * 5
    assert all(batches(3.0))  # 10x less variance


def test_long_rows_stop_on_the_ratio_estimate_and_report_the_regression():
    """At 65536 entries a row, the ratio estimate reaches 1e-3 in ~150 rows, long before the 512
    rows the regression needs to decide alone: sampling stops there (not at 33.5M samples), and
    the estimate reported is the regression's, tighter than asked (agreeing with the table)."""
    fmt = resolve_format("int4-g128")
    bank = SampleBank(seed=5, row_length=65536)
    est = bank.estimate(fmt, rel_err=1e-3)
    assert est.samples < 512 * 65536
    errors, norms, _ = bank.run(fmt, rel_err=0.0, max_samples=est.samples)
    g, se = _ratio_estimate(errors, norms)
    assert se <= 1e-3 * g  # what stopped it
    assert est.std_err < se / 2  # what it reports
    table = lookup_gmse(fmt, row_length=4096, rel_err=1e-4)  # groups of 128: the row length does not matter
    assert abs(est.gmse - table.gmse) <= 4 * math.hypot(est.std_err, table.std_err)


def _dropped_energy_by_sorting(x: np.ndarray, keep: int, units: int, unit: int) -> np.ndarray:
    """Per row: the energy of the units outside each group's ``keep`` largest, by sorting."""
    rows, length = x.shape
    energy = (x.astype(np.float64) ** 2).reshape(rows, length // (units * unit), units, unit).sum(-1)
    return np.sort(energy, axis=-1)[..., : units - keep].sum(axis=(-1, -2))


@pytest.mark.parametrize(("name", "length"), [
    ("sparse-50+int4", 512), ("sparse30+sint4-g128", 256), ("2:4+int4", 512), ("2:4x2+int4", 512),
    ("1:8x4+int4", 256),
])
def test_pruned_energy_rows_and_exact_mean(name, length):
    """The dropped-energy statistic equals the energy sorting finds outside the kept units, and
    its mean over 16,384 rows matches the exact expectation (nm_gmse with the row as the group
    for row-wise magnitude pruning: not the infinite-row limit)."""

    (control,) = [c for c in controls_for(resolve_format(name), length) if c.kind == "pruned2"]
    x = np.random.default_rng(31).standard_normal((16384, length)).astype(np.float32)
    stat = control_rows(x, (control,))[:, 0]
    np.testing.assert_allclose(stat, _dropped_energy_by_sorting(x, *control.pruning.kept_units(length)),
                               rtol=1e-9)
    se = stat.std(ddof=1) / math.sqrt(len(stat))
    assert abs(stat.mean() - expected_per_row(control, length)) < 4 * se
