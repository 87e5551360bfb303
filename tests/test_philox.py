"""The sample bank's generator (gmse_cli.gmse.philox) against references outside it.

- Philox4x32-10: the known-answer vectors of Random123 (Salmon et al. 2011; its
  ``tests/kat_vectors``: philox4x32 10) and a pure-Python implementation written here from
  the paper's round function, on random counters and keys. numpy's own ``Philox`` is
  Philox4x64-10, a different generator, so it cannot serve as the reference.
- The Box-Muller transform: libm's log, cos and sin through numpy (to 1e-13), and its numpy
  twin bit for bit.
- The stream: its numpy twin bit for bit, independence of the thread count and of how the
  stream is cut, and the standard normal distribution (Kolmogorov-Smirnov, moments, and a
  chi-square on equiprobable bins).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import stats

from gmse_cli.gmse import SampleBank
from gmse_cli.gmse.philox import (
    TILE,
    box_muller,
    box_muller_reference,
    gaussian_stream,
    gaussian_stream_reference,
    philox4x32,
    philox4x32_reference,
    philox_key,
)

# Random123 tests/kat_vectors, "philox4x32 10": counter (4 words), key (2 words) -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_python(counter, key):
    """Philox4x32-10 from Salmon et al. 2011, section 4: python integers, nothing shared."""
    mask = 0xFFFFFFFF
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & mask, (p0 >> 32) ^ c3 ^ k1, p0 & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return c0, c1, c2, c3


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    ctr = np.array([counter], dtype=np.uint32)
    assert tuple(int(v) for v in philox4x32(ctr, key)[0]) == expected
    assert tuple(int(v) for v in philox4x32_reference(ctr, key)[0]) == expected
    assert philox_python(counter, key) == expected


def test_philox_matches_an_independent_implementation_on_random_counters():
    rng = np.random.default_rng(2011)
    counters = rng.integers(0, 2**32, size=(500, 4), dtype=np.uint32)
    for key in [(0, 0), (0xFFFFFFFF, 1), tuple(int(k) for k in rng.integers(0, 2**32, size=2))]:
        ours = philox4x32(counters, key)
        assert np.array_equal(ours, philox4x32_reference(counters, key))
        for row, counter in zip(ours[:100], counters[:100], strict=True):
            assert tuple(int(v) for v in row) == philox_python(tuple(int(c) for c in counter), key)


def test_box_muller_against_libm_and_its_twin():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**32, size=200_000, dtype=np.uint32)
    b = rng.integers(0, 2**32, size=200_000, dtype=np.uint32)
    # the extremes of both words: u = 2^-33 (the largest radius) and u just below 1
    a[:4] = [0, 1, 2**32 - 2, 2**32 - 1]
    b[:4] = [0, 2**30, 2**31, 2**32 - 1]
    z0, z1 = box_muller(a, b)
    t0, t1 = box_muller_reference(a, b)
    assert np.array_equal(z0, t0) and np.array_equal(z1, t1)
    u = (a.astype(np.float64) + 0.5) * 2.0**-32
    r = np.sqrt(-2.0 * np.log(u))
    theta = 2 * np.pi * b.astype(np.float64) * 2.0**-32
    # polynomials to ~1e-14 relative, then rounded to float32: the float32 of libm's value
    # or a neighbour of it
    for ours, exact in ((z0, r * np.cos(theta)), (z1, r * np.sin(theta))):
        assert np.all(np.abs(ours - exact) <= 1.5 * np.spacing(np.abs(exact).astype(np.float32)) + 1e-12)
    assert np.abs(z0).max() <= math.sqrt(66 * math.log(2)) + 1e-6


@pytest.mark.parametrize("start, n", [(0, TILE), (0, 5000), (1000, 1024), (777, 3001), (5, 3), (10**12 + 3, 2000)])
def test_stream_matches_its_twin_and_any_cut(start, n):
    key = philox_key(3)
    ours = gaussian_stream(key, start, n)
    assert ours.dtype == np.float32 and ours.shape == (n,)
    assert np.array_equal(ours, gaussian_stream_reference(key, start, n))
    # a stretch of the stream is the same however it is cut
    whole = gaussian_stream(key, start - start % TILE, n + start % TILE + 17)
    assert np.array_equal(ours, whole[start % TILE : start % TILE + n])


def test_stream_does_not_depend_on_the_thread_count():
    key = philox_key(0)
    before = numba.get_num_threads()
    try:
        many = gaussian_stream(key, 123, 1 << 20)
        numba.set_num_threads(1)
        one = gaussian_stream(key, 123, 1 << 20)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(many, one)


def test_seeds_give_unrelated_streams():
    a, b = (gaussian_stream(philox_key(s), 0, 1 << 16).astype(np.float64) for s in (0, 1))
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)


def test_stream_is_standard_normal():
    n = 1 << 22
    z = gaussian_stream(philox_key(20250602), 0, n).astype(np.float64)
    # Moments: mean 0, variance 1, skewness 0, kurtosis 3, each within 5 standard errors.
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(z**3)) < 5 * math.sqrt(15 / n)
    assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96 / n)
    assert stats.kstest(z[: 1 << 20], "norm").pvalue > 1e-4
    # 1000 equiprobable bins: the chi-square p-value of a true normal sample is uniform
    edges = stats.norm.ppf(np.linspace(0, 1, 1001)[1:-1])
    counts = np.bincount(np.searchsorted(edges, z), minlength=1000)
    assert stats.chisquare(counts).pvalue > 1e-4
    # Pairs (cos, sin of one angle) and neighbours in the stream are uncorrelated.
    tiles = z.reshape(-1, 4, TILE // 4)
    for lag_a, lag_b in ((0, 1), (2, 3), (0, 2)):
        assert abs(np.corrcoef(tiles[:, lag_a].ravel(), tiles[:, lag_b].ravel())[0, 1]) < 5 / math.sqrt(n / 4)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / math.sqrt(n)


def test_the_bank_is_the_stream():
    bank = SampleBank(seed=4, row_length=1000)  # a batch that does not end on a tile
    x, norms = bank.batch(2)
    n = bank.batch_elements
    expected = gaussian_stream_reference(philox_key(4), 2 * n, n).reshape(x.shape)
    assert np.array_equal(x, expected)
    assert np.allclose(norms, (expected.astype(np.float64) ** 2).sum(axis=1), rtol=1e-12)
