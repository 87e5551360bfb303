"""Per-group statistics: the numba kernel against its numpy twin and against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmse_cli.compress.group_stats import (
    STAT_AMAX,
    STAT_HI,
    STAT_LO,
    STAT_RMS,
    group_stat,
    group_stat_reference,
)

KINDS = (STAT_RMS, STAT_AMAX, STAT_LO, STAT_HI)


def test_hand_computed_groups():
    x = np.array([[3.0, -4.0, 1.0, 2.0], [0.5, 0.25, -2.0, -1.0]], dtype=np.float32)
    keep = np.array([[True, True, False, True], [True, True, False, False]])
    # groups of 2: [3, -4] [1, 2] / [0.5, 0.25] [-2, -1]
    np.testing.assert_array_equal(group_stat(x, None, 2, STAT_RMS), [[math.sqrt(12.5), math.sqrt(2.5)], [math.sqrt(0.15625), math.sqrt(2.5)]])
    np.testing.assert_array_equal(group_stat(x, None, 2, STAT_AMAX), [[4.0, 2.0], [0.5, 2.0]])
    np.testing.assert_array_equal(group_stat(x, None, 2, STAT_LO), [[-4.0, 0.0], [0.0, -2.0]])
    np.testing.assert_array_equal(group_stat(x, None, 2, STAT_HI), [[3.0, 2.0], [0.5, 0.0]])
    # masked: [1, 2] keeps only 2; [-2, -1] keeps nothing (every statistic 0)
    np.testing.assert_array_equal(group_stat(x, keep, 2, STAT_RMS), [[math.sqrt(12.5), 2.0], [math.sqrt(0.15625), 0.0]])
    np.testing.assert_array_equal(group_stat(x, keep, 2, STAT_LO), [[-4.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(group_stat(x, keep, 4, STAT_AMAX), [[4.0], [0.5]])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group", [1, 8, 96])
@pytest.mark.parametrize("masked", [False, True])
def test_kernel_equals_twin(kind, group, masked):
    rng = np.random.default_rng(kind * 100 + group)
    x = (rng.standard_normal((37, 192)) * rng.uniform(0.01, 100, (37, 1))).astype(np.float32)
    keep = rng.random(x.shape) < 0.6 if masked else None
    if masked:
        keep[3, :group] = False  # a group with nothing kept
    got = group_stat(x, keep, group, kind)
    want = group_stat_reference(x, keep, group, kind)
    assert got.shape == (37, 192 // group) and got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
