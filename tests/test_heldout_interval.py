"""The held-out RMSE's 95% interval over its parts (schemes, GMSE groups) against the exact
bootstrap distribution, enumerated here, and against an independent resampling of the parts
that QuEST's fit reports."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gmse_cli.fit.heldout import parts_interval


def _exact_pooled(sq_sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The pooled RMSE of every ordered draw of k parts out of k, each equally likely."""
    k = len(counts)
    draws = np.array(list(itertools.product(range(k), repeat=k)))
    return np.sqrt(sq_sums[draws].sum(axis=1) / counts[draws].sum(axis=1))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [4, 5])
def test_interval_brackets_the_exact_bootstrap_quantiles(k, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 9, size=k).astype(float)
    rmse = rng.uniform(0.002, 0.02, size=k)  # one part far worse than another, as rotated W1A1 is
    sq_sums = rmse**2 * counts
    exact = _exact_pooled(sq_sums, counts)
    low, high = parts_interval(sq_sums, counts)
    # 4000 draws: each end within the exact distribution's 1-5% (95-99%) quantiles
    assert np.quantile(exact, 0.01) <= low <= np.quantile(exact, 0.05)
    assert np.quantile(exact, 0.95) <= high <= np.quantile(exact, 0.99)


def test_fewer_than_three_parts_have_no_interval():
    assert parts_interval(np.array([1e-4, 4e-4]), np.array([2.0, 3.0])) == (None, None)


def test_quest_fit_interval_matches_an_independent_resampling(quest_unified_fit):
    report = quest_unified_fit.heldout_schemes
    inside = [e for e in report.entries if e.inside and e.rmse is not None]
    counts = np.array([e.n_runs for e in inside], dtype=float)
    sq_sums = np.array([e.rmse**2 * e.n_runs for e in inside])
    assert np.sqrt(sq_sums.sum() / counts.sum()) == pytest.approx(report.rmse_inside, rel=1e-12)
    # 200,000 draws of the schemes, by index, from another generator
    picks = np.random.default_rng(12345).integers(0, len(inside), size=(200_000, len(inside)))
    pooled = np.sqrt(sq_sums[picks].sum(axis=1) / counts[picks].sum(axis=1))
    want_low, want_high = np.quantile(pooled, [0.025, 0.975])
    assert report.rmse_inside_low == pytest.approx(want_low, rel=0.05)
    assert report.rmse_inside_high == pytest.approx(want_high, rel=0.05)
    assert report.rmse_inside_low < report.rmse_inside < report.rmse_inside_high
