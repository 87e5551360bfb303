"""Control-variate GMSE estimates on generated int formats: closed forms, agreement with the
plain ratio estimate on the same rows, and the edge cases (groups of one entry, few rows,
paired differences) that must stay finite.

Closed forms used here, derived by hand (not from the code):

- ``fintB-g1``: each entry is its group's amax, so it maps to +-(2^B - 1)/2 steps, half a step
  from the nearest level (and +(2^B - 1)/2 clips to the top level, also half a step away):
  the error is |x| / (2^B - 1), GMSE = 1 / (2^B - 1)^2.
- ``sintB-g1`` (and asymmetric ``aintB-g1``): the one entry is a grid point, GMSE = 0 up to
  float32 rounding.
- ``sintB-g2`` with q = 2^(B-1) - 1: the larger |entry| t is exact, the other, t u with
  |u| < 1, errs by (t / q) d(q u) (d: distance to the nearest integer). Integrating t out of
  phi(t) phi(t u) t^3 (= 1 / (pi (1 + u^2)^2) over t > 0, both orders) leaves
  GMSE = 4 / (pi q^2) * I(q), I(q) = integral_0^1 d(q u)^2 / (1 + u^2)^2 du.
- ``fintB-g2`` with q = (2^B - 1) / 2: as above, but the larger entry too errs by half a step,
  t / (2 q), and E[t^2] = 1 + 2 / pi (the larger of two squared half-normals), so
  GMSE = ((1 + 2 / pi) / (4 q^2) + 8 / (pi q^2) * I(q)) / 2.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from gmse_cli.gmse import SampleBank
from gmse_cli.gmse.bank import _ratio_estimate
from gmse_cli.gmse.control import (
    RegressionSums,
    controls_for,
    expected_per_row,
    regression_estimate,
)
from gmse_cli.spec import resolve_format


def _kinked_integral(q: float) -> float:
    """I(q) above, by quadrature between the kinks of d(q u)^2 (q u a half-integer)."""
    kinks = [(k + 0.5) / q for k in range(math.ceil(q)) if (k + 0.5) / q < 1]
    edges = [0.0, *kinks, 1.0]
    return sum(
        integrate.quad(lambda u: (q * u - round(q * u)) ** 2 / (1 + u * u) ** 2, a, b, epsabs=0, epsrel=1e-12)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    )


def _g2_closed_form(base: str, bits: int) -> float:
    if base == "sint":
        q = 2 ** (bits - 1) - 1
        return 4 / (math.pi * q * q) * _kinked_integral(q)
    q = (2**bits - 1) / 2
    return ((1 + 2 / math.pi) / (4 * q * q) + 8 / (math.pi * q * q) * _kinked_integral(q)) / 2


def _sound(est) -> bool:
    """Finite, a positive standard error (or exactly 0 with an exactly 0 estimate), and an
    interval that holds the estimate."""
    values = (est.gmse, est.std_err, est.ci_low, est.ci_high)
    return (all(math.isfinite(v) for v in values) and (est.std_err > 0 or est.gmse == 0)
            and est.ci_low <= est.gmse <= est.ci_high)


@pytest.mark.parametrize(("name", "kinds"), [
    ("sint4-g1", ()), ("fint4-g1", ()), ("int4-g1-mse", ()), ("aint4-g1", ("hi2",)),
    ("sint4-g1-se8m0", ("pow2",)), ("sint4-g2", ("amax2",)), ("aint4-g2", ("hi2", "lo2")),
])
def test_groups_of_one_drop_the_norm_again(name, kinds):
    """Over groups of one entry amax^2 (and hi^2 + lo^2) sums to the row norm, which is
    already a column: keeping it made X'X singular (LinAlgError for aint4-g1 at any size)."""
    assert tuple(c.kind for c in controls_for(resolve_format(name), 64)) == kinds


def test_collinear_columns_fall_back_to_the_ratio():
    rng = np.random.default_rng(4)
    norms = 64 + 11 * rng.standard_normal(300)
    errors = 0.01 * norms + rng.standard_normal(300) * 0.01
    assert regression_estimate(errors, norms, norms[:, None].copy(), np.array([64.0]), 64) is None
    sums = RegressionSums(np.array([64.0, 64.0]), 64)  # two identical statistics
    sums.add(errors, norms, np.column_stack([norms + 1, norms + 1]))
    assert sums.estimate() is None


@pytest.mark.parametrize("row_length", [8, 64])
def test_groups_of_one_closed_forms(row_length):
    bank = SampleBank(seed=3, row_length=row_length)
    for name in ("aint4-g1", "sint4-g1", "sint8-g1"):
        est = bank.estimate(resolve_format(name), rel_err=1e-4, max_samples=1 << 21)
        assert _sound(est) and est.gmse < 1e-12, name
    est = bank.estimate(resolve_format("fint4-g1"), rel_err=1e-4, max_samples=1 << 21)
    assert _sound(est) and est.gmse == pytest.approx(1 / 225, rel=1e-5)
    est = bank.estimate(resolve_format("sint4-g1-se8m0"), rel_err=1e-4, max_samples=1 << 21)
    errors, norms, _ = bank.run(resolve_format("sint4-g1-se8m0"), rel_err=0.0, max_samples=est.samples)
    g, se = _ratio_estimate(errors, norms)
    # its one statistic explains nothing beyond the norm (1.00x): dropped at 512 rows, the
    # ratio estimate stands
    assert _sound(est) and (est.gmse, est.std_err) == pytest.approx((g, se), rel=1e-12)


@pytest.mark.parametrize("base", ["sint", "fint"])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_groups_of_two_closed_form(base, bits):
    est = SampleBank(seed=8, row_length=64).estimate(resolve_format(f"{base}{bits}-g2"), rel_err=1e-3)
    assert _sound(est)
    assert abs(est.gmse - _g2_closed_form(base, bits)) <= 4 * est.std_err


@pytest.mark.parametrize(("name", "want"), [
    # one entry per group: x / s = +-1 / C, rounded and clipped to the grid; the error is
    # |x| |1 - C k| for the level k reached, so GMSE = mean over signs of (1 - C k)^2
    ("sint4-g1-absmean0.3", (1 - 0.3 * 3) ** 2),  # 1 / C = 3.33 -> 3
    ("sint2-g1-absmean0.3", (1 - 0.3 * 1) ** 2),  # clipped at q = 1
    ("fint2-g1-absmean0.3", ((1 - 0.3) ** 2 + (1 - 0.6) ** 2) / 2),  # top +1, bottom -2
    ("sint3-g1-absmean2.5", 1.0),  # 1 / C = 0.4 -> 0: everything rounds to zero
    ("lut[-1,0,1]-g1-absmean", 0.0),  # BitNet b1.58: each entry is its own mean magnitude
])
def test_absmean_groups_of_one_closed_forms(name, want):
    est = SampleBank(seed=3, row_length=64).estimate(resolve_format(name), rel_err=1e-3)
    assert _sound(est)
    # (fint2's two signs err differently: the draw of signs is sampling error)
    assert abs(est.gmse - want) <= 4 * est.std_err + 1e-6 * want + 1e-12, (est.gmse, est.std_err)


def _generated(count: int, seed: int) -> list[str]:
    """Valid int formats whose scales follow their groups' extremes, drawn at random; with
    absmean scales (no quantizer controls) behind a pruning, whose control remains."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        base = str(rng.choice(["sint", "aint", "fint", "int"]))
        rule = "mse" if base == "int" or rng.random() < 0.2 else "absmax"
        prefix = str(rng.choice(["", "", "", "sparse30+", "2:4+", "2:4x2+"]))  # a rotation first: no controls
        if prefix and base != "aint" and rng.random() < 0.25:  # absmean: centred grids only
            rule = f"absmean{rng.choice(['', '0.5', '1.7'])}"
        name = (f"{prefix}{base}{rng.choice([2, 3, 4, 8])}-{rng.choice(['g1', 'g2', 'g8', 'g16', 'g32', 'g64', 'row'])}"
                f"-{rule}{rng.choice(['', '', '-sfp16', '-sbf16', '-se8m0'])}" + ("-allstats" if prefix == "2:4x2+" else ""))
        if name not in out:
            out.append(name)
    return out


def test_generated_formats_agree_with_the_ratio_estimate():
    """On the same 2048 rows, the regression intercept and the ratio of sums estimate the same
    GMSE; they differ by the controls' sampling error, whose variance is the difference of
    theirs (the regression residual is orthogonal to the controls)."""
    bank = SampleBank(seed=5, row_length=256)
    controlled = 0
    for name in _generated(44, seed=1):
        fmt = resolve_format(name)
        controls = controls_for(fmt, 256)
        errors, norms, batches = bank.run(fmt, rel_err=0.0, max_samples=0)
        g, se = _ratio_estimate(errors, norms)
        if not controls:
            continue
        controlled += 1
        stats = np.concatenate([bank.control_rows(i, controls) for i in range(batches)])
        means = np.array([expected_per_row(c, 256) for c in controls])
        gc, sec, dof = regression_estimate(errors, norms, stats, means, 256)
        assert dof == len(errors) - 2 - len(controls)
        assert 0 < sec <= se * 1.01, name
        paired = max(math.sqrt(max(se**2 - sec**2, 0.0)), 0.1 * se)
        assert abs(gc - g) <= 4.5 * paired, name
    assert controlled >= 40


@pytest.mark.parametrize(("a", "b"), [
    ("sint4-g32", "sint4-g32"),  # the same format: exactly 0
    ("sint4-g32", "int4"),  # only one side has controls
    ("sint4-g1-se8m0", "aint4-g1"),  # groups of one on both sides
    ("sint4-g32", "sint4-g32-se4m3"),  # per-tensor second level: batches are the units
    ("aint3-g16-se8m0", "sint3-g16"),
])
def test_differences_stay_sound(a, b):
    bank = SampleBank(seed=6, row_length=64)
    fa, fb = resolve_format(a), resolve_format(b)
    for max_samples in (1000, 1 << 20):
        d = bank.difference(fa, fb, rel_err=1e-4, max_samples=max_samples)
        values = (d.difference, d.std_err, d.ci_low, d.ci_high)
        assert all(math.isfinite(v) for v in values) and d.ci_low <= d.difference <= d.ci_high
        assert d.std_err > 0 or (a == b and d.difference == 0.0)
        ga, gb = bank.estimate(fa, rel_err=0.0, max_samples=d.samples), bank.estimate(fb, rel_err=0.0, max_samples=d.samples)
        assert abs(d.difference - (ga.gmse - gb.gmse)) <= 4 * math.hypot(ga.std_err, gb.std_err) + 1e-15


def test_long_rows_with_few_of_them():
    """At 65536 entries a row, a tiny sample cap leaves 16 rows (too few for the regression:
    the ratio estimate) and 32 rows (regression with 29 degrees of freedom); both sound, the
    regression consistent with the ratio estimate over 64 rows."""
    bank = SampleBank(seed=7, row_length=65536)
    fmt = resolve_format("fint4-row")
    few = bank.estimate(fmt, rel_err=1e-4, max_samples=1000)
    more = bank.estimate(fmt, rel_err=1e-4, max_samples=1 << 21)
    assert _sound(few) and _sound(more)
    assert (few.samples, more.samples) == (16 * 65536, 32 * 65536)
    errors, norms, _ = bank.run(fmt, rel_err=0.0, max_samples=64 * 65536)
    g, se = _ratio_estimate(errors, norms)
    assert more.std_err < se / 10 and abs(more.gmse - g) <= 4 * se


def test_batches_beyond_the_held_ones_are_drawn_once(monkeypatch):
    """Beyond the batches a bank keeps, a batch's control statistics reuse the batch just
    compressed (they drew it a second time: half again the generator's time at --rel-err 1e-4
    for int4-g128) and are not kept; the estimate is the same bit for bit."""
    from gmse_cli.gmse import philox

    fmt = resolve_format("sint4-g32")
    kept = SampleBank(seed=9, row_length=64).estimate(fmt, rel_err=0.0, max_samples=8 << 17)
    draws = []
    real = philox.gaussian_stream
    monkeypatch.setattr(philox, "gaussian_stream", lambda *a: draws.append(a[1]) or real(*a))
    bank = SampleBank(seed=9, row_length=64)
    bank._held = 1
    est = bank.estimate(fmt, rel_err=0.0, max_samples=8 << 17)
    assert est.samples == 8 << 17 and len(draws) == 8 == len(set(draws))
    assert (est.gmse, est.std_err) == (kept.gmse, kept.std_err)
    assert len(bank._controls) == 1
