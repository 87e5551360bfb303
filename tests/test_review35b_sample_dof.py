"""`uscl mse --sample`: a standard error's degrees of freedom are its random rows - 1, all-zero
rows included.

Regression: the degrees of freedom were counted as the rows of nonzero influence - 1, and an
all-zero row (err = norm = 0, a pruned or dead unit) has influence 0 though it was drawn and
measured like any other. A 40-row layer with 20 zero rows at --sample 0.5 measures its 10
largest rows in full and 10 drawn from the other 30: 9 degrees of freedom (t = 2.26), but only
the nonzero draws were counted (about 3: t = 3.2 to 4.3, intervals far wider than the design's).
The stratified design is the README's (half the budget on the largest |w| rows, half at random);
the quantile comes from scipy.
"""

from __future__ import annotations

import conftest  # noqa: F401  (puts the package on the path like every test)
import numpy as np
import pytest
from scipy import stats

safetensors = pytest.importorskip("safetensors.numpy")

from gmse_cli.realmse.report import measure_mse  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    rng = np.random.default_rng(7)
    w = (rng.standard_t(3, size=(40, 256)) * np.exp(rng.normal(0, 0.5, size=(40, 1)))).astype(np.float32)
    w[::2] = 0.0  # 20 dead rows among the 40
    path = tmp_path_factory.mktemp("dof") / "m.safetensors"
    safetensors.save_file({"model.layers.0.mlp.up_proj.weight": w}, str(path))
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_rows_drawn_count_as_degrees_of_freedom(ckpt, seed):
    (res,) = measure_mse(ckpt, ["int4"], sample=0.5, seed=seed, law=None, rel_err=1e-2)
    (layer,) = res.layers
    assert layer.rows_measured == 20  # 10 largest in full + 10 at random from the other 30
    t9 = stats.t.ppf(0.975, 20 // 2 - 1)
    for mse, high, se in ((layer.mse, layer.ci_high, layer.std_err), (res.mse, res.ci_high, res.std_err)):
        assert se > 0
        assert high - mse == pytest.approx(t9 * se, rel=1e-3)
