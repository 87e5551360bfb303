"""The bootstrap's two summaries, checked against numbers derived here rather than read from a
fit: the percentile interval of a standard normal sample (scipy's normal quantiles) and the
expectation of a resampling count (1 per run, variance (n - 1) / n within a scheme of n)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gmse_cli.fit.resampling import bootstrap_weights, percentiles


def test_percentiles_of_a_standard_normal_sample():
    # 2.5% / 97.5% points -+1.959964, and half the 15.87-84.13% range is 1 sigma
    x = np.random.default_rng(3).standard_normal((400_000, 1))
    lo, hi, sigma = percentiles(x)
    z = stats.norm.ppf(0.975)
    assert lo[0] == pytest.approx(-z, abs=0.02)
    assert hi[0] == pytest.approx(z, abs=0.02)
    assert sigma[0] == pytest.approx(1.0, abs=0.01)


def test_bootstrap_counts_resample_every_run_of_its_scheme_once_on_average():
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    W = bootstrap_weights(groups, 4000, np.random.default_rng(0))
    # each replicate draws as many runs as each scheme has, from that scheme only
    assert (W[:, :3].sum(axis=1) == 3).all() and (W[:, 3:5].sum(axis=1) == 2).all() and (W[:, 5] == 1).all()
    # a draw with replacement of n from n: every run's count is Binomial(n, 1/n), mean 1,
    # variance (n - 1) / n; over 4000 replicates the mean is within 4 sd = 4 sqrt(2/3 / 4000)
    assert W.mean(axis=0) == pytest.approx(np.ones(6), abs=4 * np.sqrt(2 / 3 / 4000))
    assert W[:, 2].var() == pytest.approx(2 / 3, rel=0.1)
