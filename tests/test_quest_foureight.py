"""QuEST's FourEight quantizer as a uscl format: ``[had128+]2:4x2+int4-allstats``.

What QuEST's ``FourEightTrustQuantizer`` does (IST-DASLab/QuEST,
src/models/quantization/base_linear.py), re-implemented here from that description:

- scale = a_4 * RMS over *all* entries of the row (a_4 = 2.513930578568423);
- x_q = round(clip(x, -scale, scale) / step + 1/2) * step - step/2, step = 2 scale / 15 (the
  16-level midrise grid; round half to even, as torch.round);
- in every 4 consecutive pairs of entries, the 2 pairs of smallest L2 norm (of x, before
  rounding) are zeroed in x_q.

Independent numbers:

- GMSE(2:4x2) = 5/24 (tests/test_sparsity.py derives it), the issue's Monte Carlo 0.2084;
- the composite in the infinite-row limit (the RMS is then 1): the pruned energy 5/24 plus the
  rounding error on kept entries, E[e(x1) P_keep(x1^2 + x2^2)] with e(x) = (x - Q(x))^2 and
  P_keep(s) = 1 - 3 exp(-s) + 2 exp(-3s/2) (test_sparsity's derivation). Integrating x2 out
  (E[exp(-c x2^2)] = (1 + 2c)^(-1/2)) leaves one-dimensional integrals of e(x) phi(x) exp(-c x^2),
  computed below by quadrature between the grid's decision points: 0.21520 (the issue's Monte
  Carlo: 0.2152).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate
from scipy.linalg import hadamard

from gmse_cli.compress import compress
from gmse_cli.fit.stages import GmseCache, run_stages
from gmse_cli.gmse import gmse_of
from gmse_cli.runs import load_quest_runs, quest_scheme
from gmse_cli.spec import Family, catalog, resolve_format

A4 = 2.513930578568423  # QuEST's OPTIMAL_GAUSSIAN_SCALES[4]


def _quest_foureight(x: np.ndarray) -> np.ndarray:
    """QuEST's FourEight forward pass on rows of ``x`` (4 bits), in float64.

    Two choices, each the float32 arithmetic QuEST runs in as well as uscl's: the scale is
    rounded to float32 (QuEST's tensors are float32; uscl stores an fp32 scale). QuEST's
    "+ 1e-8" guard against all-zero rows is left out: it moves a unit-RMS row's float32 scale
    by at most one unit in the last place, which changes the last bit of the output only.
    """
    x64 = x.astype(np.float64)
    rows, cols = x.shape
    rms = np.sqrt(np.mean(x64**2, axis=1, keepdims=True))
    scale = (A4 * rms).astype(np.float32).astype(np.float64)
    step = 2 * scale / 15
    xq = np.round(np.clip(x64, -scale, scale) / step + 0.5) * step - step / 2
    pairs = x64.reshape(rows, cols // 8, 4, 2)
    norms = np.sqrt((pairs**2).sum(-1))
    # the 2 smallest of every 4 (random rows have no ties; QuEST leaves them to torch.topk)
    drop = np.argsort(norms, axis=-1, kind="stable")[..., :2]
    zero = np.zeros(norms.shape, dtype=bool)
    np.put_along_axis(zero, drop, True, axis=-1)
    xq = np.where(np.repeat(zero, 2, axis=-1).reshape(rows, cols), 0.0, xq)
    return xq.astype(np.float32)


def _rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Gaussian rows and heavy-tailed rows of varied scale (clipping happens there)
    gauss = rng.standard_normal((32, 1024))
    heavy = rng.standard_t(3, size=(32, 1024)) * rng.lognormal(0, 2, size=(32, 1))
    return np.concatenate([gauss, heavy]).astype(np.float32)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_composite_is_quests_forward_bit_for_bit(backend):
    fmt = resolve_format("2:4x2+int4-allstats")
    for seed in (0, 1):
        x = _rows(seed)
        got = compress(fmt, x, backend=backend)
        np.testing.assert_array_equal(got, _quest_foureight(x))
    # the scale sees the whole row: the kept-statistics variant differs
    assert not np.array_equal(compress(resolve_format("2:4x2+int4"), x), got)


def test_rotated_composite_is_quests_hadamard_forward():
    # QuEST's HadamardFourEightTrustQuantizer: rotate by 128-blocks of the orthonormal
    # Hadamard matrix, the FourEight forward, rotate back. Here the rotation runs in float64,
    # uscl's in float32 butterflies, so the two agree to float32 rounding (and a pair whose
    # norm ties another's to that precision could be chosen differently: none here).
    x = _rows(2)
    h = hadamard(128) / math.sqrt(128)
    blocks = np.kron(np.eye(1024 // 128), h)
    rotated = (x.astype(np.float64) @ blocks).astype(np.float32)
    want = _quest_foureight(rotated).astype(np.float64) @ blocks.T
    got = compress(catalog()["had128+2:4x2+int4-allstats"], x).astype(np.float64)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
    assert np.max(np.abs(got - want) / rms) < 1e-5


def _composite_gmse_infinite_rows() -> float:
    step = 2 * A4 / 15
    edges = [-A4 + k * step for k in range(16)]  # decision points of the 16 levels (and +-A4)

    def err(x: float) -> float:
        j = min(math.floor(abs(x) / step), 7)
        return (abs(x) - (j + 0.5) * step) ** 2

    def moment(c: float) -> float:  # E[e(x) exp(-c x^2)] for x standard normal
        f = lambda x: err(x) * math.exp(-(0.5 + c) * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
        inner = integrate.quad(f, -A4, A4, points=edges[1:], limit=200, epsabs=1e-15)[0]
        return inner + 2 * integrate.quad(f, A4, 40.0, limit=200, epsabs=1e-15)[0]

    rounding = moment(0.0) - 3 * moment(1.0) / math.sqrt(3.0) + 2 * moment(1.5) / 2.0
    return 5 / 24 + rounding


def test_gmse_of_pairs_and_of_the_composite(run_cli):
    exact = json.loads(run_cli("gmse", "2:4x2", "2:4", "--recompute", "--json").stdout)["results"]
    assert exact[0]["gmse_method"] == "exact" and exact[0]["gmse"] == pytest.approx(5 / 24, rel=1e-12)
    mc = json.loads(run_cli("gmse", "2:4x2", "2:4", "had128+2:4x2+int4-allstats", "--monte-carlo",
                            "--rel-err", "2e-3", "--json").stdout)["results"]
    pairs, elementwise, composite = mc
    assert pairs["gmse_low"] <= 0.2084 <= pairs["gmse_high"]  # the Monte Carlo
    assert pairs["gmse_low"] <= 5 / 24 <= pairs["gmse_high"]
    assert elementwise["gmse_low"] <= 0.1325 <= elementwise["gmse_high"]
    assert composite["gmse_low"] <= 0.2152 <= composite["gmse_high"]
    # The infinite-row value: 4096-entry rows add an O(1/n) bias from the RMS estimate, far
    # inside this interval.
    limit = _composite_gmse_infinite_rows()
    assert limit == pytest.approx(0.2152, abs=5e-5)
    assert composite["gmse_low"] <= limit <= composite["gmse_high"]


def test_quest_foureight_records_map_to_the_composite(tmp_path):
    for cls in ("HadamardFourEightTrustQuantizer", "HalfHadamardFourEightTrustQuantizer"):
        assert quest_scheme(cls, 4) == "had128+2:4x2+int4-allstats"
    assert quest_scheme("FourEightTrustQuantizer", 3) == "2:4x2+int3-allstats"
    path = tmp_path / "quest.json"
    path.write_text(json.dumps([{
        "non_embedding_parameters": 3e7, "tokens": 3e9, "loss": 3.6,
        "w_quant": "HadamardFourEightTrustQuantizer", "w_bits": 4,
        "a_quant": "HadamardTrustQuantizer", "a_bits": 4,
    }]))
    (run,) = load_quest_runs(path)
    assert run.weights == "had128+2:4x2+int4-allstats" and run.activations == "had128+int4"
    assert run.weight_format() == catalog()["had128+2:4x2+int4-allstats"]
    # Factorized capacity: the sparsity stage is 2:4x2 alone; the quantization stage alone is
    # int4 on a dense row (nothing pruned, so its all-entries statistics are plain int4's).
    stages = run_stages(run, GmseCache())
    int4 = gmse_of("int4").gmse
    assert [f for f, _ in stages] == [Family.SPARSITY, Family.QUANTIZATION, Family.QUANTIZATION]
    assert stages[0][1] == pytest.approx(5 / 24, rel=1e-12)
    assert stages[1][1] == pytest.approx(int4, rel=1e-12) and stages[2][1] == pytest.approx(int4, rel=1e-12)


def test_quests_published_foureight_runs_use_it(shared_data):
    raw = json.loads((shared_data / "quest_runs.json").read_text())
    runs = load_quest_runs(shared_data / "quest_runs.json")
    four_eight = [r for r, rec in zip(runs, raw, strict=True) if "FourEight" in rec["w_quant"]]
    assert four_eight and all(r.weights == "had128+2:4x2+int4-allstats" for r in four_eight)
