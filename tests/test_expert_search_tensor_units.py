"""A search's final GMSE of a format whose second-level scale spans the tensor (E4M3 group scales
under one fp32 scale) must rest on as many tensors as the engine's minimum (32), not on 2.

Found by re-deriving `uscl search --bits 4.5`: its cached `1:4+lm4-mse-g128-se4m3[quantize]`
stage read 0.0080497 +- 9.1e-8 from 2 tensors (262,144 samples), which `uscl gmse
lm4-mse-g128-se4m3` then served from the cache with the interval [0.0080495, 0.0080499]; a fresh
engine estimate is 0.0080747 +- 7.3e-6, so the standard error was 80x too small and the interval
missed by 3.4 of the honest standard errors.

The reference here is a numpy implementation written from the README (`sint4-g16-se4m3`: levels
-7..7, absmax group scale amax/7 of groups of 16, stored in E4M3 under the fp32 tensor scale
max(group scale)/448, tensors of 131072 // 4096 = 32 rows), and an E4M3 rounding written from
its definition (bias 7, 3 mantissa bits, subnormal step 2^-9, round half to even, top 448).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmse_cli import resolve_format
from gmse_cli.gmse import lookup_gmse, remember_gmse
from gmse_cli.gmse.estimates import make_estimate
from gmse_cli.search.evaluate import GaussianEvaluator

ROW = 4096
TENSOR_ROWS = 131072 // ROW


def _e4m3(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    e = np.maximum(np.floor(np.log2(np.maximum(a, 1e-300))), -6)
    step = 2.0 ** (e - 3)
    return np.sign(v) * np.minimum(np.round(a / step) * step, 448.0)


def _tensor_gmse(x: np.ndarray) -> float:
    y = x.reshape(x.shape[0], -1, 16)
    s = np.abs(y).max(-1, keepdims=True) / 7
    top = s.max() / 448
    s = _e4m3(s / top) * top
    q = np.clip(np.round(y / s), -7, 7) * s
    return float(((y - q) ** 2).sum() / (y**2).sum())


@pytest.fixture(scope="module")
def reference() -> tuple[float, float, float]:
    """(GMSE, its standard error, the standard deviation of one tensor's GMSE)."""
    rng = np.random.default_rng(20260512)
    per_tensor = np.array([_tensor_gmse(rng.standard_normal((TENSOR_ROWS, ROW))) for _ in range(96)])
    sd = float(per_tensor.std(ddof=1))
    return float(per_tensor.mean()), sd / math.sqrt(len(per_tensor)), sd


def test_reference_e4m3_rounding_matches_its_grid():
    # every e4m3fn value up to 448 is a fixed point, and midpoints go to the even neighbour
    grid = np.array([m / 8 * 2.0**-6 for m in range(8)] + [(1 + m / 8) * 2.0**e for e in range(-6, 9) for m in range(8)])
    grid = grid[grid <= 448]
    assert np.array_equal(_e4m3(grid), grid)
    assert _e4m3(np.array([1.0625, 1.1875, 500.0])).tolist() == [1.0, 1.25, 448.0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_search_final_gmse_uses_the_engine_minimum_of_tensors(seed, reference):
    truth, truth_se, sd = reference
    ev = GaussianEvaluator(seed=seed, rel_err=3e-3, row_length=ROW, level_rows=(4, 16, 64), max_rows=1024,
                           cache="off")
    g, se = ev.final(resolve_format("sint4-g16-se4m3"))
    # from 32 tensors the standard error is sd / sqrt(32) to within chi(31) noise (~13%);
    # from 2 tensors (before) it was 0.39x-2.4x that over these seeds
    assert 0.6 < se / (sd / math.sqrt(32)) < 1.5
    # and the value agrees with the reference within its interval (seed 2 was 8 s.e. off)
    assert abs(g - truth) < 4 * math.hypot(se, truth_se)


def test_cached_batch_unit_estimate_from_too_few_tensors_is_no_hit():
    fmt = resolve_format("sint4-g16-se4m3")
    samples = 2 * TENSOR_ROWS * ROW  # what an earlier search cached: 2 tensors, no degrees of freedom
    # written as that search wrote it: no degrees of freedom recorded
    est = make_estimate(fmt, ROW, 0.00745, 1e-7, "monte-carlo", samples)
    remember_gmse(fmt, est, row_length=ROW, seed=0)
    assert lookup_gmse(fmt, row_length=ROW, rel_err=1e-3) is None
    # 32 tensors with their degrees of freedom are a hit, with t(31) interval ends
    est = make_estimate(fmt, ROW, 0.00745, 6e-6, "monte-carlo", 32 * TENSOR_ROWS * ROW, dof=31)
    remember_gmse(fmt, est, row_length=ROW, seed=0)
    hit = lookup_gmse(fmt, row_length=ROW, rel_err=1e-3)
    assert hit is not None and hit.method == "cache"
    assert hit.ci_high - hit.gmse == pytest.approx(2.0395134 * 6e-6, rel=1e-5)  # scipy t.ppf(.975, 31)
