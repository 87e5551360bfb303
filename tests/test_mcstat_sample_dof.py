"""`uscl mse --sample` intervals carry the degrees of freedom of their few random rows.

A 40-row layer at --sample 0.05 measures 4 rows: the 2 with the largest |w| in full and 2 drawn
at random, so its delta-method standard error has 1 degree of freedom. A normal 1.96 interval
covered the truth in 60% of 100 seeds (nvfp4 on heavy-tailed rows; int4 85%). Truths here come
from a second int4 compressor written from the README (QuEST midrise grid, 16 levels over
[-s, s], s = 2.5139305786 x RMS(row)), quantiles from scipy.
"""

from __future__ import annotations

import conftest  # noqa: F401  (puts the package on the path like every test)
import numpy as np
import pytest
from scipy import stats

safetensors = pytest.importorskip("safetensors.numpy")

from gmse_cli.realmse.report import measure_mse  # noqa: E402


def _int4(x: np.ndarray) -> np.ndarray:
    s = 2.5139305786 * np.sqrt(np.mean(x * x, axis=1, keepdims=True))
    step = 2 * s / 15
    return -s + np.clip(np.round((x + s) / step), 0, 15) * step


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    rng = np.random.default_rng(3)
    w = (rng.standard_t(3, size=(40, 256)) * np.exp(rng.normal(0, 0.5, size=(40, 1)))).astype(np.float32)
    path = tmp_path_factory.mktemp("mcstat") / "m.safetensors"
    safetensors.save_file({"model.layers.0.mlp.up_proj.weight": w}, str(path))
    x = w.astype(np.float64)
    return path, float(((x - _int4(x)) ** 2).sum() / (x * x).sum())


def test_small_sample_interval_uses_t_quantile(ckpt):
    path, truth = ckpt
    (res,) = measure_mse(path, ["int4"], sample=0.05, seed=0, law=None, rel_err=1e-2)
    (layer,) = res.layers
    assert layer.rows_measured == 4
    t1 = stats.t.ppf(0.975, 1)  # 2 random rows: 1 degree of freedom
    for low, high, mse, se in ((layer.ci_low, layer.ci_high, layer.mse, layer.std_err),
                               (res.ci_low, res.ci_high, res.mse, res.std_err)):
        assert se > 0
        assert high - mse == pytest.approx(t1 * se, rel=1e-9)
        assert low == pytest.approx(max(0.0, mse - t1 * se), rel=1e-9)


def test_small_sample_interval_covers(ckpt):
    path, truth = ckpt
    (full,) = measure_mse(path, ["int4"], law=None, rel_err=1e-2)
    assert full.mse == pytest.approx(truth, rel=1e-4)
    hits = 0
    for seed in range(30):
        (res,) = measure_mse(path, ["int4"], sample=0.05, seed=seed, law=None, rel_err=1e-2)
        hits += res.ci_low <= truth <= res.ci_high
    assert hits >= 27  # 95% nominal
