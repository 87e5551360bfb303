"""Sparsity masks and their exact Gaussian MSEs, against numbers derived outside the module.

References:
- unstructured magnitude pruning: the closed form (2 Phi(t) - 1) - 2 t phi(t) of paper.md,
  recomputed here with scipy, and the integral of x^2 phi(x) over |x| < t by quadrature;
- 1:2 pruning: E[min(|x1|, |x2|)^2] = 1 - 2/pi (in polar coordinates, min(cos^2, sin^2) of a
  uniform angle averages 1/2 - 1/pi, and E[r^2] = 2), so GMSE(1:2) = (1 - 2/pi) / 2;
- N:M pruning in general: Monte Carlo with a sort-based pruner written in this file;
- N:M over blocks of K (N:MxK): GMSE(2:4x2) = 5/24 in closed form (derived in
  test_nm_blocks_gmse_two_of_four_pairs); other (N, M, K) by Monte Carlo with a sort-based
  block pruner written here;
- masks: their defining properties (counts, structure, ordering), checked exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from gmse_cli.compress import sparsity
from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Sparsify

STAGES = [
    Sparsify(sparsity=0.5),
    Sparsify(sparsity=0.3),
    Sparsify(sparsity=0.9, granularity="tensor"),
    Sparsify(pattern="n:m", n=2, m=4),
    Sparsify(pattern="n:m", n=1, m=4),
    Sparsify(pattern="n:m", n=4, m=8),
    Sparsify(pattern="n:m", n=5, m=64),
    Sparsify(pattern="n:m", n=60, m=64),
    Sparsify(pattern="n:m", n=2, m=4, block=2),
    Sparsify(pattern="n:m", n=1, m=4, block=8),
    Sparsify(pattern="n:m", n=3, m=32, block=4),  # M above the counting kernel's 16
    Sparsify(pattern="n:m", n=30, m=32, block=2),
    Sparsify(pattern="block", block=16, sparsity=0.4),
    Sparsify(pattern="block", block=4, sparsity=0.25, granularity="tensor"),
    Sparsify(sparsity=0.0),
]


def _gaussian(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Exact GMSEs
# ---------------------------------------------------------------------------------------------


def _closed_form(s: float) -> float:
    t = stats.norm.ppf((1 + s) / 2)
    return (2 * stats.norm.cdf(t) - 1) - 2 * t * stats.norm.pdf(t)


@pytest.mark.parametrize("s", [0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_magnitude_gmse_closed_form_and_quadrature(s):
    t = stats.norm.ppf((1 + s) / 2)
    quad, _ = integrate.quad(lambda x: x * x * stats.norm.pdf(x), -t, t, epsabs=1e-14, epsrel=1e-13)
    assert sparsity.magnitude_gmse(s) == pytest.approx(_closed_form(s), rel=1e-12)
    assert sparsity.magnitude_gmse(s) == pytest.approx(quad, rel=1e-10)


def test_magnitude_gmse_edges():
    assert sparsity.magnitude_gmse(0.0) == 0.0
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(SpecError, match="sparsity"):
            sparsity.magnitude_gmse(bad)


@pytest.mark.parametrize("s", [0.2, 0.5, 0.8])
def test_magnitude_mask_monte_carlo_matches_closed_form(s):
    x = _gaussian(256, 4096, seed=1)
    kept = sparsity.mask(Sparsify(sparsity=s), x)
    x64 = x.astype(np.float64)
    per_row = (np.where(kept, 0.0, x64) ** 2).sum(1) / (x64**2).sum(1)
    # 256 independent rows give the standard error; the per-row pruning threshold is an order
    # statistic of 4096 values, whose O(1/n) bias is far below it.
    se = per_row.std(ddof=1) / math.sqrt(len(per_row))
    assert abs(per_row.mean() - _closed_form(s)) < 4 * se + 2e-4 * _closed_form(s)


def test_nm_gmse_one_of_two_closed_form():
    assert sparsity.nm_gmse(1, 2) == pytest.approx((1 - 2 / math.pi) / 2, rel=1e-11)


def _nm_monte_carlo(n: int, m: int, samples: int, seed: int) -> tuple[float, float]:
    x = np.random.default_rng(seed).standard_normal((samples // m, m))
    mag = np.sort(np.abs(x), axis=1)
    lost = (mag[:, : m - n] ** 2).sum(1)  # the m - n smallest magnitudes are pruned
    total = (x**2).sum(1)
    # ratio estimator: its spread from per-group contributions around the ratio
    ratio = lost.sum() / total.sum()
    resid = lost - ratio * total
    se = resid.std(ddof=1) * math.sqrt(len(resid)) / total.sum()
    return ratio, se


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (3, 4), (1, 8)])
def test_nm_gmse_matches_monte_carlo(n, m):
    mc, se = _nm_monte_carlo(n, m, 2**22, seed=n * 100 + m)
    assert abs(sparsity.nm_gmse(n, m) - mc) < 4 * se


def test_nm_blocks_gmse_two_of_four_pairs():
    # A pair's energy s = x1^2 + x2^2 is exponential with mean 2: F(s) = 1 - u, u = exp(-s/2).
    # It is pruned unless at least 2 of the other 3 pairs are smaller: kept with probability
    # 3F^2(1-F) + F^3 = 1 - 3u^2 + 2u^3. Its x1 then loses E[x1^2 (3 e^-s - 2 e^-3s/2)], and
    # E[x^2 e^(-c x^2)] = (1 + 2c)^(-3/2), E[e^(-c x^2)] = (1 + 2c)^(-1/2), so
    # GMSE = 3 * 3^(-3/2) * 3^(-1/2) - 2 * 4^(-3/2) * 4^(-1/2) = 1/3 - 1/8 = 5/24.
    assert sparsity.nm_gmse(2, 4, 2) == pytest.approx(5 / 24, rel=1e-12)
    assert sparsity.nm_gmse(2, 4, 1) == sparsity.nm_gmse(2, 4)  # K = 1 is plain N:M


def _nm_blocks_monte_carlo(n: int, m: int, k: int, samples: int, seed: int) -> tuple[float, float]:
    x = np.random.default_rng(seed).standard_normal((samples // (m * k), m, k))
    energy = np.sort((x**2).sum(-1), axis=1)
    lost = energy[:, : m - n].sum(1)  # the m - n blocks of smallest norm are pruned
    total = energy.sum(1)
    ratio = lost.sum() / total.sum()
    se = (lost - ratio * total).std(ddof=1) * math.sqrt(len(lost)) / total.sum()
    return ratio, se


@pytest.mark.parametrize("n, m, k", [(2, 4, 2), (1, 4, 8), (4, 8, 3), (3, 4, 16)])
def test_nm_blocks_gmse_matches_monte_carlo(n, m, k):
    mc, se = _nm_blocks_monte_carlo(n, m, k, 2**22, seed=n * 1000 + m * 10 + k)
    assert abs(sparsity.nm_gmse(n, m, k) - mc) < 4 * se


def test_nm_gmse_edges_and_bad_input():
    assert sparsity.nm_gmse(4, 4) == 0.0
    # larger groups approach unstructured pruning of the same density from above
    values = [sparsity.nm_gmse(m // 2, m) for m in (2, 4, 8, 16, 32, 64)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] > sparsity.magnitude_gmse(0.5)
    for n, m in [(5, 4), (0, 4), (2.0, 4)]:
        with pytest.raises(SpecError, match="nm_gmse"):
            sparsity.nm_gmse(n, m)
    for k in (0, 2.0, True):
        with pytest.raises(SpecError, match=f"k={k}"):
            sparsity.nm_gmse(2, 4, k)
    # coarser units lose more: blocks of K approach dropping a random half (GMSE 1/2)
    values = [sparsity.nm_gmse(2, 4, k) for k in (1, 2, 4, 16, 64)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)) and values[-1] < 0.5


# ---------------------------------------------------------------------------------------------
# Masks: structure, exactly
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.1, 0.5, 0.75, 0.999])
def test_magnitude_rows_keep_exact_count_and_the_largest(s):
    x = _gaussian(64, 1000, seed=2)
    kept = sparsity.mask(Sparsify(sparsity=s), x)
    keep = math.floor((1 - s) * 1000 + 0.5)
    assert (kept.sum(1) == keep).all()
    a = np.abs(x)
    if 0 < keep < 1000:
        assert (np.where(kept, a, np.inf).min(1) >= np.where(kept, -np.inf, a).max(1)).all()


def test_magnitude_tensor_keeps_a_global_count():
    x = _gaussian(32, 256, seed=3)
    kept = sparsity.mask(Sparsify(sparsity=0.7, granularity="tensor"), x)
    assert kept.sum() == round(0.3 * x.size)
    a = np.abs(x)
    assert a[kept].min() >= a[~kept].max()
    assert len(set(kept.sum(1))) > 1  # rows differ: the threshold is global


def test_half_up_rounding_and_index_ties():
    # 10 entries at 25% sparsity keep round(7.5) = 8; equal magnitudes go to the lower index
    x = np.ones((3, 10), dtype=np.float32)
    x[1] = -1.0
    x[2, ::2] = -1.0
    for fn in (sparsity.mask, sparsity.mask_reference):
        kept = fn(Sparsify(sparsity=0.25), x)
        assert (kept == (np.arange(10) < 8)).all()
    nm = sparsity.mask(Sparsify(pattern="n:m", n=2, m=4), np.ones((1, 8), dtype=np.float32))
    assert nm.tolist() == [[True, True, False, False] * 2]


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (7, 8), (3, 64)])
def test_nm_keeps_n_largest_of_every_group(n, m):
    x = _gaussian(16, 256, seed=4)
    kept = sparsity.mask(Sparsify(pattern="n:m", n=n, m=m), x).reshape(16, -1, m)
    a = np.abs(x).reshape(16, -1, m)
    assert (kept.sum(-1) == n).all()
    assert (np.where(kept, a, np.inf).min(-1) >= np.where(kept, -np.inf, a).max(-1)).all()


@pytest.mark.parametrize("n, m, k", [(2, 4, 2), (1, 4, 8), (3, 32, 4)])
def test_nm_blocks_keep_n_largest_norm_blocks_of_every_m(n, m, k):
    x = _gaussian(16, 512, seed=7)
    kept = sparsity.mask(Sparsify(pattern="n:m", n=n, m=m, block=k), x).reshape(16, -1, m, k)
    assert (kept.all(-1) | ~kept.any(-1)).all()  # all or nothing per block
    blocks = kept.all(-1)
    assert (blocks.sum(-1) == n).all()
    norms = (x.astype(np.float64).reshape(16, -1, m, k) ** 2).sum(-1)
    assert (np.where(blocks, norms, np.inf).min(-1) >= np.where(blocks, -np.inf, norms).max(-1)).all()


def test_nm_blocks_ties_keep_the_earlier_block():
    # Equal pair norms everywhere: the first 2 pairs of every 4 are kept (lower index first).
    x = np.tile(np.array([1, -1, -1, 1, 1, 1, -1, -1], dtype=np.float32), (2, 2))
    x[1] = np.tile(np.array([0, 1, 1, 0, 0, -1, -1, 0], dtype=np.float32), 2)
    want = np.tile(np.repeat([True, True, False, False], 2), 2)
    for fn in (sparsity.mask, sparsity.mask_reference):
        kept = fn(Sparsify(pattern="n:m", n=2, m=4, block=2), x)
        np.testing.assert_array_equal(kept, np.stack([want, want]))


def test_block_mask_zeroes_whole_blocks_of_smallest_norm():
    x = _gaussian(8, 512, seed=5)
    kept = sparsity.mask(Sparsify(pattern="block", block=16, sparsity=0.3), x).reshape(8, 32, 16)
    assert (kept.all(-1) | ~kept.any(-1)).all()  # all or nothing per block
    blocks_kept = kept.all(-1)
    assert (blocks_kept.sum(1) == 32 - round(0.3 * 32)).all()
    norms = (x.astype(np.float64).reshape(8, 32, 16) ** 2).sum(-1)
    assert (np.where(blocks_kept, norms, np.inf).min(1) >= np.where(blocks_kept, -np.inf, norms).max(1)).all()


# ---------------------------------------------------------------------------------------------
# numba == numpy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.label())
@pytest.mark.parametrize("ties", [False, True])
def test_kernel_equals_reference(stage, ties):
    x = _gaussian(33, 512, seed=6)
    if ties:  # coarse values: many equal magnitudes and block norms exercise the tie rule
        x = np.round(x * 2) / 2
    np.testing.assert_array_equal(sparsity.mask(stage, x), sparsity.mask_reference(stage, x))


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.label())
def test_twins_take_a_tensor_of_no_rows(stage):
    # The numpy twin once reshaped blocks with -1, which numpy cannot infer from 0 rows.
    x = np.zeros((0, 512), dtype=np.float32)
    for masks in (sparsity.mask, sparsity.mask_reference):
        assert masks(stage, x).shape == (0, 512)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_clean_error():
    with pytest.raises(DataError, match="2-D"):
        sparsity.mask(Sparsify(sparsity=0.5), np.zeros(8, dtype=np.float32))
    with pytest.raises(SpecError, match="does not divide"):
        sparsity.mask(Sparsify(pattern="n:m", n=2, m=4), np.zeros((2, 6), dtype=np.float32))
    with pytest.raises(SpecError, match=r"M\*K = 4\*2 = 8 does not divide the row length 12"):
        sparsity.mask(Sparsify(pattern="n:m", n=2, m=4, block=2), np.zeros((2, 12), dtype=np.float32))
    with pytest.raises(SpecError, match="does not divide"):
        sparsity.mask_reference(Sparsify(pattern="block", block=8, sparsity=0.5), np.zeros((2, 12)))
    with pytest.raises(SpecError, match="Sparsify"):
        sparsity.mask("sparse-50", np.zeros((2, 4)))


@pytest.mark.parametrize("s", [1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2, 0.049, 0.05])
def test_magnitude_gmse_of_a_small_sparsity_is_accurate(s):
    """Regression: s - 2 t phi(t) cancelled (sparsity 1e-6: 158x too large; 1e-9: negative).

    Reference: the series of E[x^2; |x| < t] = 2 phi(0) (t^3/3 - t^5/10 + t^7/56 - t^9/432 + t^11/4224 - ...)
    with t = sqrt(2) erfinv(s); below t = 0.06 the first term left out is under 1e-13 relative.
    """
    from scipy import special

    from gmse_cli.compress.sparsity_gmse import magnitude_gmse

    t = math.sqrt(2.0) * float(special.erfinv(s))
    assert t < 0.065
    series = 2 / math.sqrt(2 * math.pi) * (t**3 / 3 - t**5 / 10 + t**7 / 56 - t**9 / 432 + t**11 / 4224)
    assert magnitude_gmse(s) == pytest.approx(series, rel=1e-12, abs=0.0)


def _nm_gmse_in_u(n: int, m: int, k: int) -> float:
    """nm_gmse by scipy's adaptive quadrature over the CDF value u = F(r) instead of r: the
    chi-square quantile times P[Binomial(m - 1, u) <= m - n - 1], breakpoints across its step."""
    from scipy import special as sp
    from scipy import stats as st

    p = (m - n - 0.5) / (m - 1)
    width = math.sqrt(p * (1 - p) / (m - 1))
    points = sorted({min(max(p + j * width, 1e-12), 1 - 1e-12) for j in range(-12, 13, 2)})
    value = integrate.quad(lambda u: st.chi2.ppf(u, k) * sp.bdtr(m - n - 1, m - 1, u), 0, 1,
                           points=points, limit=2000, epsabs=0, epsrel=1e-13)[0]
    return value / k


@pytest.mark.parametrize("n, m, k", [(2048, 4096, 1), (410, 4096, 1), (3686, 4096, 1), (256, 512, 8), (63, 64, 1)])
def test_nm_gmse_row_wide_groups_match_quadrature_in_u(n, m, k):
    """Groups as wide as a row (the magnitude and block pruning of a row, kept units counted):
    the binomial factor steps within 0.01 of r, which the panels refine around."""
    assert sparsity.nm_gmse(n, m, k) == pytest.approx(_nm_gmse_in_u(n, m, k), rel=1e-11)


def test_row_magnitude_pruning_of_finite_rows_loses_more_than_the_limit():
    # keeping the 2048 largest of 4096 loses 0.09% more than the infinite-row limit (c / L, c = 3.7)
    finite = sparsity.nm_gmse(2048, 4096)
    assert finite == pytest.approx(_nm_gmse_in_u(2048, 4096, 1), rel=1e-11)
    assert 8e-4 < finite / sparsity.magnitude_gmse(0.5) - 1 < 1e-3

