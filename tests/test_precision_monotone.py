"""Precision at the extremes and monotonicity of GMSE, capacity and loss.

References are computed here from the definitions with mpmath (40 digits): the GMSE of a
scalar grid as a sum of closed-form cell integrals, fp32's as a per-binade Euler-Maclaurin sum,
capacity and loss from the law's formula, the finite-row GMSE of a fine grid and the mean of
its clipping energy by two-dimensional quadrature (numpy Gauss-Legendre, scipy's adaptive quad).
None of them is read from uscl's own output.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

from gmse_cli import capacity, load_law, predicted_loss, resolve_format
from gmse_cli.compress.grid_mse import optimal_rms_constant
from gmse_cli.errors import SpecError
from gmse_cli.gmse import estimate_gmse
from gmse_cli.rank import pareto_front, rank, sort_rows
from gmse_cli.rank.evaluate import _loss_above_dense

mp.mp.dps = 40


# --- references ------------------------------------------------------------------------------


def _phi(x):
    return mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)


def _mass(a, b):
    """Phi(b) - Phi(a) from tails, no difference of near-ones."""
    if a >= 0:
        return (mp.erfc(a / mp.sqrt(2)) - mp.erfc(b / mp.sqrt(2))) / 2
    if b <= 0:
        return (mp.erfc(-b / mp.sqrt(2)) - mp.erfc(-a / mp.sqrt(2))) / 2
    return 1 - (mp.erfc(-a / mp.sqrt(2)) + mp.erfc(b / mp.sqrt(2))) / 2


def _cell(a, b, q):
    """int_a^b (x - q)^2 phi(x) dx."""
    pa = 0 if a == -mp.inf else _phi(a)
    pb = 0 if b == mp.inf else _phi(b)
    apa = 0 if a == -mp.inf else a * pa
    bpb = 0 if b == mp.inf else b * pb
    m0 = _mass(a, b)
    return (m0 - (bpb - apa)) - 2 * q * (pa - pb) + q * q * m0


def _levels_mse(levels, scale):
    """E[(x - s q(x / s))^2] for nearest-level rounding onto sorted ``levels``."""
    lv = [mp.mpf(v) * mp.mpf(scale) for v in levels]
    total = mp.mpf(0)
    for i, q in enumerate(lv):
        a = -mp.inf if i == 0 else (lv[i - 1] + q) / 2
        b = mp.inf if i == len(lv) - 1 else (q + lv[i + 1]) / 2
        total += _cell(a, b, q)
    return total


def _fp_levels(e, m, style):
    """Every finite value of ExMy: ieee reserves the top exponent, fn only its all-ones code."""
    bias = 2 ** (e - 1) - 1
    pos = []
    for field in range(2**e):
        for mant in range(2**m):
            frac = mp.mpf(mant) / 2**m
            pos.append(frac * mp.mpf(2) ** (1 - bias) if field == 0 else (1 + frac) * mp.mpf(2) ** (field - bias))
    if style == "ieee":
        pos = pos[: -(2**m)]
    elif style == "fn":
        pos = pos[:-1]
    return [-v for v in pos[:0:-1]] + pos


def _quest_levels(bits):
    """2^b midrise levels evenly over [-1, 1], both ends included."""
    n = 2**bits
    return [-1 + mp.mpf(2) * k / (n - 1) for k in range(n)]


def _fp_cast_binades(e, m):
    """GMSE of a plain ExMy cast with a fine mantissa: per binade [a, b) of step h, the cells
    hold h^2/12 of the density summed at the levels (Euler-Maclaurin: integral + h/2 (phi(a) -
    phi(b)) - h^2/12 (phi'(b) - phi'(a))), the cell of a itself reaching h/4 below it."""
    bias = 2 ** (e - 1) - 1
    total = mp.mpf(0)
    for k in range(max(-80, 1 - bias), 8):
        a, b, h = mp.mpf(2) ** k, mp.mpf(2) ** (k + 1), mp.mpf(2) ** (k - m)
        riemann = _mass(a, b) + h / 2 * (_phi(a) - _phi(b)) - h * h / 12 * (a * _phi(a) - b * _phi(b))
        total += h * h / 12 * riemann + _phi(a) * h**3 * (mp.mpf(3) / 64 - mp.mpf(1) / 12)
    return 2 * total


def _exact(name):
    (est,) = estimate_gmse([resolve_format(name)], method="exact")
    return est.gmse


# --- GMSE at the fine end -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, levels",
    [
        ("fp4", _fp_levels(2, 1, "finite")),
        ("fp6-e2m3", _fp_levels(2, 3, "finite")),
        ("fp6-e3m2", _fp_levels(3, 2, "finite")),
        ("fp8-e4m3", _fp_levels(4, 3, "fn")),
        ("fp8-e5m2", _fp_levels(5, 2, "ieee")),
        ("int8", _quest_levels(8)),
        ("int12", _quest_levels(12)),
    ],
)
def test_exact_gmse_of_fine_grids_matches_mpmath(name, levels):
    stage = resolve_format(name).stages[-1]
    c = stage.scale_constant or optimal_rms_constant(stage)
    ref = _levels_mse(levels, c)
    # 8-bit and coarser: 1e-10; int12's 4096 cells cancel between terms ~1e5 times its MSE
    assert float(abs(_exact(name) - ref) / ref) < (1e-8 if name == "int12" else 1e-10)
    if stage.scale_constant is None:  # the constant uscl searched is a minimum of the exact MSE
        assert ref <= _levels_mse(levels, c * (1 + 1e-4)) and ref <= _levels_mse(levels, c * (1 - 1e-4))


def test_fp32_cast_gmse_matches_binade_sum():
    ref = _fp_cast_binades(8, 23)  # ~6.43e-16; the neglected terms are 2^-46 relative
    assert float(abs(_exact("fp32") - ref) / ref) < 1e-10


def test_effective_bits_is_log_quarter_of_gmse():
    for name in ("fp32", "fp16", "int16", "int8", "sparse-90", "1:4"):
        (est,) = estimate_gmse([resolve_format(name)])
        assert est.effective_bits == pytest.approx(float(-mp.log(est.gmse) / mp.log(4)), rel=1e-14)


def test_more_bits_never_more_gmse():
    for family in (
        [f"int{b}" for b in range(1, 17)],
        [f"lm{b}" for b in range(1, 8)],
        [f"e4m{m}" for m in range(0, 6)],
        ["fp8-e5m2", "e5m3", "e5m10", "fp32"],
        ["sparse-90", "sparse-70", "sparse-50", "sparse-30", "sparse-10"],
        ["1:4", "2:4", "3:4"],
    ):
        values = [_exact(n) for n in family]
        assert all(b < a for a, b in zip(values, values[1:], strict=False)), dict(zip(family, values, strict=True))


# --- capacity and loss --------------------------------------------------------------------------


def _rho_ref(g, L, F, C):
    g = mp.mpf(g)
    if g >= 1:
        return mp.mpf(0)
    if g == 0:
        return mp.mpf(L)
    return mp.mpf(L) * mp.tanh(mp.mpf(F) * (-mp.log(g) / mp.log(4))) ** mp.mpf(C)


_EXTREME_GMSE = [0.0, 5e-324, 1e-300, 6.4e-16, 1e-12, 1e-9, 0.5, 1 - 1e-9, 1 - 2**-52, 1.0, 2.0, math.inf]


@pytest.mark.parametrize("family", ["quantization", "sparsity", "vq"])
def test_capacity_at_extreme_gmse_matches_mpmath(family):
    curve = load_law("paper-llama-c4").curve(family)
    L, F, C = curve.L.value, curve.F.value, curve.C.value
    got = capacity(np.array(_EXTREME_GMSE), L, F, C)
    for g, value in zip(_EXTREME_GMSE, got, strict=True):
        ref = _rho_ref(g, L, F, C)
        assert value == 0 if ref == 0 else float(abs(value - ref) / ref) < 1e-14, (g, value, ref)
    assert np.all(np.diff(got) <= 0)  # non-increasing in GMSE, 0 from GMSE 1 on


def test_loss_is_non_increasing_in_params_tokens_and_capacity():
    law = load_law("paper-llama-c4")
    k = {n: getattr(law, n).value for n in ("A", "alpha", "B", "beta", "E")}
    grid = np.logspace(0, 30, 61)
    assert np.all(np.diff(predicted_loss(grid, 1e9, 0.5, **k)) <= 0)
    assert np.all(np.diff(predicted_loss(1e9, grid, 0.5, **k)) <= 0)
    rho = np.concatenate([[0.0], np.logspace(-300, 0, 61)])
    loss = predicted_loss(1e9, 1e9, rho, **k)
    assert loss[0] == math.inf and np.all(np.diff(loss) <= 0) and np.all(loss >= k["E"])


@pytest.mark.parametrize("params, rho", [(2e8, 1 - 2.87e-9), (1e15, 1 - 1e-12), (1e300, 0.5), (1.0, 0.3), (1e9, 1e-300)])
def test_loss_above_dense_does_not_cancel(params, rho):
    law = load_law("paper-llama-c4")
    A, alpha = law.A.value, law.alpha.value
    ref = mp.mpf(A) * mp.mpf(params) ** -mp.mpf(alpha) * ((mp.mpf(rho)) ** -mp.mpf(alpha) - 1)
    assert float(abs(_loss_above_dense(A, alpha, params, rho) - ref) / ref) < 1e-12
    assert _loss_above_dense(A, alpha, params, 0.0) == math.inf


def test_rank_delta_loss_of_near_lossless_formats():
    """fp32 at 1e15 parameters and bf16 at 1e300 lose ~1e-11 and ~1e-42 over the dense model:
    a difference of two losses gave 3e-5 relative error and 0.0."""
    law = load_law("paper-llama-c4")
    A, alpha = mp.mpf(law.A.value), mp.mpf(law.alpha.value)
    for name, params in (("fp32", 1e15), ("bf16", 1e300)):
        (row,) = rank([name], params=params, tokens=1e3, draws=50)
        ref = A * mp.mpf(params) ** -alpha * (mp.mpf(row.rho) ** -alpha - 1)
        assert float(abs(row.delta_loss_vs_bf16 - ref) / ref) < 1e-12
        assert row.delta_loss_low <= row.delta_loss_vs_bf16 <= row.delta_loss_high


def test_rank_orders_one_family_by_gmse_and_intervals_hold_the_point():
    names = ["int2", "int3", "int4", "int8", "fp4", "fp8-e4m3", "nf4", "mxfp4", "sparse-50", "2:4+int4"]
    rows = rank(names, params=1e3, tokens=1e15, draws=200)
    quant = sorted((r for r in rows if r.family == "quantization"), key=lambda r: r.gmse)
    assert all(b.rho <= a.rho for a, b in zip(quant, quant[1:], strict=False))
    for r in rows:
        assert r.gmse_low <= r.gmse <= r.gmse_high
        assert r.rho_low <= r.rho <= r.rho_high
        assert r.loss_low <= r.predicted_loss <= r.loss_high
        assert r.delta_loss_low <= r.delta_loss_vs_bf16 <= r.delta_loss_high


# --- API and CLI edges --------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [[None], [3], None, "int4"])
def test_pareto_front_and_sort_rows_name_what_is_no_rank_row(rows):
    with pytest.raises(SpecError, match="RankRows"):
        pareto_front(rows)
    with pytest.raises(SpecError, match="RankRows"):
        sort_rows(rows, "rho")


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "int4", "--draws", "1_000"],
        ["predict", "int4", "--seed", "1_0"],
        ["gmse", "int4", "--row-length", "4_096"],
        ["gmse", "int4", "--max-samples", "1_000_000"],
        ["gmse", "int4", "--seed", "\u0661\u0662"],
        ["formats", "--row-length", "1_024"],
        ["gmse", "int4", "--max-samples", "1e6"],  # was "Input should be a valid integer", naming no value
    ],
)
def test_integer_options_refuse_what_counts_refuse(run_cli, args):
    res = run_cli(*args)
    assert res.code == 2 and "whole number" in res.stderr and f"'{args[-1]}'" in res.stderr
    assert res.stderr.strip().count("\n") == 0


def test_integer_options_take_plain_digits(run_cli):
    assert run_cli("gmse", "int4", "--seed", "12", "--row-length", " 4096 ").code == 0


# --- Monte Carlo of grids that clip rarely ------------------------------------------------------


def _finite_row_gmse(bits: int, c: float, row_length: int) -> float:
    """GMSE of a fine midrise grid on rows of ``row_length``, scale c * RMS(row): granular error
    step^2/12 inside the clip point, (|x| - scale)^2 beyond it, the row's other entries
    chi-square; two-dimensional Gauss-Legendre (the granular term is exact to O(step^2))."""
    k = row_length - 1
    sd = math.sqrt(2 * k)
    u, w = np.polynomial.legendre.leggauss(400)
    lo, hi = max(k - 14 * sd, 0.0), k + 14 * sd
    s, ws = 0.5 * (hi - lo) * (u + 1) + lo, 0.5 * (hi - lo) * w
    dens = stats.chi2.pdf(s, k)[:, None]
    clip = c * np.sqrt(s / (row_length - c * c))[:, None]
    xg, wg = 0.5 * clip * (u + 1), 0.5 * clip * w
    scale_g = c * np.sqrt((xg**2 + s[:, None]) / row_length)
    granular = wg * stats.norm.pdf(xg) * (2 * scale_g / (2**bits - 1)) ** 2 / 12
    xo, wo = clip + 6 * (u + 1), 6 * w
    over = wo * stats.norm.pdf(xo) * (xo - c * np.sqrt((xo**2 + s[:, None]) / row_length)) ** 2
    return float(2 * np.sum(ws[:, None] * dens * (granular.sum(axis=1, keepdims=True) + over.sum(axis=1, keepdims=True))))



@pytest.mark.parametrize("name, bits, row_length", [("int12", 12, 1024), ("int16", 16, 4096), ("int10", 10, 256)])
def test_monte_carlo_of_rarely_clipping_grids_covers_the_finite_row_value(name, bits, row_length):
    """int12-int16 clip one entry in 1e6-1e9, where 5-7% of their error lies: Monte Carlo runs
    of ~1e6 entries saw no clipping and reported 6.7% (int12), 5% (int16) low, 50-70 standard
    errors from the value (the default path for rows shorter than 4096)."""
    fmt = resolve_format(name)
    truth = _finite_row_gmse(bits, optimal_rms_constant(fmt.stages[0]), row_length)
    for seed in range(3):
        (est,) = estimate_gmse([fmt], seed=seed, row_length=row_length, method="monte-carlo", cache="off")
        assert abs(est.gmse - truth) < 3.5 * est.std_err, (seed, est.gmse, truth, est.std_err)


def test_search_measures_and_caches_rarely_clipping_grids_as_the_engine_does(tmp_path, monkeypatch):
    """`uscl search` measured int14 by the plain ratio (1.6% low at rows of 256, 6.5 standard
    errors) and cached it under the key that promises the clipping energy's mean, so a later
    `uscl gmse int14 --row-length 256` served the low value from the cache."""
    from gmse_cli.search.evaluate import GaussianEvaluator

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    fmt = resolve_format("int14")
    truth = _finite_row_gmse(14, optimal_rms_constant(fmt.stages[0]), 256)
    evaluator = GaussianEvaluator(seed=0, rel_err=3e-3, row_length=256, level_rows=(4, 16, 64), max_rows=65536)
    g, se = evaluator.final(fmt)
    assert evaluator.methods[fmt.stages] == "monte-carlo" and abs(g - truth) < 3.5 * se, (g, truth, se)
    (served,) = estimate_gmse([fmt], row_length=256, rel_err=3e-3, cache="use")
    assert served.method == "cache" and served.gmse == g


def test_clip_energy_mean_matches_nested_scipy_quadrature():
    from scipy import integrate

    from gmse_cli.gmse.clipping import ClipEnergy

    def reference(reach, length):
        def inner(s):
            start = reach * math.sqrt(s / (length - reach * reach))
            f = lambda x: stats.norm.pdf(x) * (x - reach * math.sqrt((x * x + s) / length)) ** 2  # noqa: E731
            return integrate.quad(f, start, np.inf, epsrel=1e-12, limit=200)[0]

        k, sd = length - 1, math.sqrt(2 * (length - 1))
        cuts = [max(0.0, k - 12 * sd), k - 3 * sd, k + 3 * sd, k + 30 * sd]
        cuts = sorted({max(0.0, v) for v in cuts})
        f = lambda s: stats.chi2.pdf(s, k) * inner(s)  # noqa: E731
        return 2 * sum(integrate.quad(f, a, b, epsrel=1e-11, limit=200)[0] for a, b in zip(cuts, cuts[1:], strict=False))

    for reach, length in ((5.938243333560204, 1024), (2.5139305786, 64)):
        ref = reference(reach, length)
        assert ClipEnergy(reach).mean_per_entry(length) == pytest.approx(ref, rel=1e-9)
