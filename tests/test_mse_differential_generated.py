"""`uscl mse` against the independent compressor of tests/gmse_independent.py on generated
checkpoints: per-layer MSE, the parameter-weighted total, and a sampled layer whose format has a
per-tensor second-level scale (e4m3 over RMS group scales)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gmse_independent import compress as reference_compress
from gmse_independent import parse as reference_parse

from gmse_cli.realmse import measure as measure_module
from gmse_cli.realmse import open_checkpoint, select_layers
from gmse_cli.realmse.layers import RowSample
from gmse_cli.realmse.measure import measure_layers
from gmse_cli.spec import resolve_format

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _reference_row_errors(text: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row squared error and squared norm of the whole tensor ``x`` under ``text``."""
    x64 = x.astype(np.float64)
    y = reference_compress(reference_parse(text), x64[None])[0]
    return np.sum((y - x64) ** 2, axis=1), np.sum(x64**2, axis=1)


def _outlier_tensor() -> np.ndarray:
    """Gaussian rows; rows 0-9 hold one spike of 20 (the largest |w|), row 7 is flat at +-10
    (the largest RMS, so the largest RMS group scale, but not the largest |w|)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 64)).astype(np.float32)
    x[:10, 3] = 20.0
    x[7] = np.where(rng.random(64) < 0.5, -10.0, 10.0)
    return x


def test_sampled_rows_use_the_tensors_second_level_scale(tmp_path, monkeypatch):
    # Rows 10..29 are measured (a fixed sample without row 7): their errors must be those of
    # the whole tensor's compression, whose e4m3 scales hang off row 7's group scale. Before the
    # fix the sample's own largest group scale was used: 0.01217 instead of 0.01135 here.
    x = _outlier_tensor()
    path = tmp_path / "w.safetensors"
    safetensors_numpy.save_file({"layers.0.fc.weight": x}, str(path))
    rows = np.arange(10, 30)
    monkeypatch.setattr(measure_module, "sample_rows", lambda info, *a, **k: RowSample(rows, None, info.rows))
    layers = select_layers(open_checkpoint(path))
    # RMS group scales (the fp default rule), e4m3 under an fp32 scale; and mean |w| group
    # scales (absmean), whose largest is row 7's too
    for text in ("e2m1-g16-se4m3", "sint3-g16-absmean1.5-se4m3"):
        (tally,) = measure_layers(layers, [resolve_format(text)], sample=0.05)
        err, norm = _reference_row_errors(text, x)
        expected = err[rows].sum() / norm[rows].sum()
        ((_, measured, mse, *_),) = tally.layers
        assert measured == len(rows)
        assert mse == pytest.approx(expected, rel=1e-6), text


def test_mse_json_matches_the_reference_per_layer_and_overall(tmp_path, run_cli):
    # Layers of odd shapes (a 3-D tensor, 37 rows, one row) in bfloat16 and float16; skipped
    # tensors: a norm vector, an embedding, the head, a bias.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(2)
    tensors = {
        "model.layers.0.mlp.up_proj.weight": rng.standard_t(3, (37, 128)).astype(ml_dtypes.bfloat16),
        # stacked (E, out, in); a tensor named as a convolution, (out, in, k), is read (out, in * k)
        "model.layers.0.stack.weight": rng.standard_t(3, (3, 5, 64)).astype(np.float16),
        "model.layers.1.fc.weight": rng.standard_normal((1, 32)).astype(np.float32),
        "model.layers.0.input_layernorm.weight": np.ones(64, np.float32),
        "model.embed_tokens.weight": rng.standard_normal((10, 64)).astype(np.float32),
        "lm_head.weight": rng.standard_normal((10, 64)).astype(np.float32),
        "model.layers.1.fc.bias": np.ones(32, np.float32),
    }
    path = tmp_path / "m.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    formats = ["int4", "nvfp4", "sint4-g64", "lut[-1,0,1]-tensor-absmean"]
    result = run_cli("mse", str(path), *[a for f in formats for a in ("-f", f)], "--json")
    assert result.code == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    for text, got in zip(formats, results, strict=True):
        fits = {n: v.astype(np.float32).reshape(-1, v.shape[-1]) for n, v in tensors.items()
                if n.endswith("weight") and v.ndim >= 2 and "embed" not in n and "lm_head" not in n}
        if text == "sint4-g64":
            fits = {n: v for n, v in fits.items() if v.shape[1] % 64 == 0}
        assert sorted(layer["name"] for layer in got["layers"]) == sorted(fits)
        total = 0.0
        for layer in got["layers"]:
            err, norm = _reference_row_errors(text, fits[layer["name"]])
            assert layer["mse"] == pytest.approx(err.sum() / norm.sum(), rel=1e-6)
            total += err.sum() / norm.sum() * fits[layer["name"]].size
        assert got["mse"] == pytest.approx(total / sum(v.size for v in fits.values()), rel=1e-6)


def test_sampled_rows_of_a_tensor_wide_format_keep_the_tensors_statistic(tmp_path, monkeypatch):
    # int4-tensor: one RMS scale for the whole tensor. A sample holding the largest rows has a
    # larger RMS than the tensor; before the fix the sampled rows were compressed alone, with
    # their own RMS (0.0792 for 0.1298 on a 4096 x 256 layer with --sample 0.05).
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((300, 64)) * np.exp(rng.normal(0.0, 0.7, (300, 1)))).astype(np.float32)
    path = tmp_path / "w.safetensors"
    safetensors_numpy.save_file({"layers.0.fc.weight": x}, str(path))
    rows = np.argsort(-np.abs(x).max(axis=1))[:30]  # the largest rows, as the certain stratum takes them
    rows.sort()
    monkeypatch.setattr(measure_module, "sample_rows", lambda info, *a, **k: RowSample(rows, None, info.rows))
    layers = select_layers(open_checkpoint(path))
    for text in ("int4-tensor", "e2m1-tensor", "sparse-50+int4-tensor", "lut[-1,0,1]-tensor-absmean",
                 "sparse-50+e2m1-tensor-absmean0.7-se8m0-rceil-allstats"):
        (tally,) = measure_layers(layers, [resolve_format(text)], sample=0.1)
        err, norm = _reference_row_errors(text, x)
        ((_, _, mse, *_),) = tally.layers
        assert mse == pytest.approx(err[rows].sum() / norm[rows].sum(), rel=1e-6), text
