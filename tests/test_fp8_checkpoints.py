"""fp8 checkpoints (DeepSeek's block scales, compressed-tensors' fp8, fbgemm's per-row scales)
are measured as the weights they stand for: each fp8 code times its scale.

Every expected number comes from a second checkpoint written by the safetensors library itself,
holding the weights dequantized here with numpy (code as float32, times its block's scale): a
format's MSE on the fp8 checkpoint must equal its MSE on that float32 one, value for value.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from gmse_cli.errors import DataError
from gmse_cli.realmse import measure_mse, open_checkpoint, read_rows, select_layers

save_file = pytest.importorskip("safetensors.numpy").save_file

_UP = "model.layers.0.mlp.up_proj.weight"
_DOWN = "model.layers.0.mlp.down_proj.weight"


def _encode(w: np.ndarray, block: tuple[int, int], code=ml_dtypes.float8_e4m3fn, scale_dtype=np.float32):
    """fp8 codes and one scale per ``block`` of ``w`` (amax / the code's largest value), as
    DeepSeek's and llm-compressor's quantizers compute them; and the weights they stand for."""
    rows, cols = w.shape
    grid = (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
    scales = np.empty(grid, np.float32)
    for i in range(grid[0]):
        for j in range(grid[1]):
            part = w[i * block[0] : (i + 1) * block[0], j * block[1] : (j + 1) * block[1]]
            scales[i, j] = np.abs(part).max() / float(ml_dtypes.finfo(code).max)
    scales = scales.astype(scale_dtype)
    full = np.repeat(np.repeat(scales.astype(np.float32), block[0], 0), block[1], 1)[:rows, :cols]
    codes = (w / full).astype(code)
    return codes, scales, codes.astype(np.float32) * full


def _weights(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # output channels an order of magnitude apart, as trained weights are: a scale applied to the
    # wrong rows or columns changes the error
    return (0.02 * rng.standard_normal((rows, cols)) * np.exp(rng.uniform(0, 2.5, (rows, 1)))).astype(np.float32)


def _pair(tmp_path: Path, quantization: dict, layers: dict, suffix: str, scale_shape=None) -> tuple[Path, Path]:
    """An fp8 checkpoint of ``layers`` (name -> (weights, block, code, scale dtype)) and the
    float32 checkpoint of the weights it stands for."""
    fp8, plain = {}, {}
    for name, (w, block, code, scale_dtype) in layers.items():
        codes, scales, dequantized = _encode(w, block, code, scale_dtype)
        fp8[name] = codes
        fp8[name + suffix] = scales.reshape(scale_shape) if scale_shape is not None else scales
        plain[name] = dequantized
    norm = np.ones(64, np.float32)
    for folder, tensors in (("fp8", fp8), ("float", plain)):
        (tmp_path / folder).mkdir()
        save_file({**tensors, "model.norm.weight": norm}, str(tmp_path / folder / "model.safetensors"))
    config = {"model_type": "llama", "quantization_config": quantization}
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(config))
    return tmp_path / "fp8", tmp_path / "float"


def _same_measurements(fp8: Path, plain: Path, formats, **kw) -> list:
    got = measure_mse(fp8, formats, law=None, rel_err=0.05, **kw)
    want = measure_mse(plain, formats, law=None, rel_err=0.05, **kw)
    for g, w in zip(got, want, strict=True):
        assert g.dequantized is not None and w.dequantized is None
        assert [layer.name for layer in g.layers] == [layer.name for layer in w.layers]
        for gl, wl in zip(g.layers, w.layers, strict=True):
            assert gl.mse == wl.mse, (g.format, gl.name)
    return got


def test_deepseek_block_scales_partial_blocks_and_two_layers(tmp_path):
    # 320 x 448 and 448 x 320: the last block of rows or of columns is partial
    fp8, plain = _pair(tmp_path, {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],
                                  "activation_scheme": "dynamic"},
                       {_UP: (_weights(320, 448, 1), (128, 128), ml_dtypes.float8_e4m3fn, np.float32),
                        _DOWN: (_weights(448, 320, 2), (128, 128), ml_dtypes.float8_e4m3fn, np.float32)},
                       "_scale_inv")
    results = _same_measurements(fp8, plain, ["int4-g64", "nvfp4", "2:4+int4"])
    assert "weight_scale_inv' per 128x128 block" in results[0].dequantized
    assert "2 fp8 (e4m3) weight matrices" in results[0].dequantized
    # the rows themselves, whole and sampled, are the dequantized weights
    ckpt, want = open_checkpoint(fp8), open_checkpoint(plain)
    rows = np.array([0, 127, 128, 255, 319])
    np.testing.assert_array_equal(read_rows(ckpt.by_name[_UP], rows), read_rows(want.by_name[_UP], rows))
    np.testing.assert_array_equal(read_rows(ckpt.by_name[_DOWN], slice(None)),
                                  read_rows(want.by_name[_DOWN], slice(None)))


def test_sampled_rows_and_small_chunks_read_the_same_weights(tmp_path):
    fp8, plain = _pair(tmp_path, {"quant_method": "fp8", "weight_block_size": [128, 128]},
                       {_UP: (_weights(384, 256, 3), (128, 128), ml_dtypes.float8_e4m3fn, np.float32)}, "_scale_inv")
    _same_measurements(fp8, plain, ["int3", "mxfp4"], sample=0.4, seed=7, chunk_bytes=4 * 256 * 10)


@pytest.mark.parametrize(("name", "block", "scale_shape", "group", "kind"), [
    ("per channel, bf16 scales", "row", None, {"strategy": "channel"}, "per row"),
    ("per tensor", "tensor", (1,), {"strategy": "tensor"}, "per tensor"),
    ("blocks of 64 x 32", (64, 32), None, {"strategy": "block", "block_structure": [64, 32]}, "per 64x32 block"),
])
def test_compressed_tensors_fp8(tmp_path, name, block, scale_shape, group, kind):
    w = _weights(192, 256, 4)
    size = {"row": (1, 256), "tensor": (192, 256)}.get(block, block)
    scale_dtype = ml_dtypes.bfloat16 if block == "row" else np.float32
    quantization = {"quant_method": "compressed-tensors", "format": "float-quantized",
                    "config_groups": {"group_0": {"targets": ["Linear"],
                                                  "weights": {"num_bits": 8, "type": "float", **group}}}}
    # per channel, compressed-tensors stores (out, 1)
    shape = (192, 1) if block == "row" else scale_shape
    fp8, plain = _pair(tmp_path, quantization, {_UP: (w, size, ml_dtypes.float8_e4m3fn, scale_dtype)}, "_scale", shape)
    (result,) = _same_measurements(fp8, plain, ["int4-g128"])
    assert f"'weight_scale' {kind}; quant_method 'compressed-tensors'" in result.dequantized


def test_fbgemm_per_row_scales_and_e5m2_codes(tmp_path):
    fp8, plain = _pair(tmp_path, {"quant_method": "fbgemm_fp8"},
                       {_UP: (_weights(96, 128, 5), (1, 128), ml_dtypes.float8_e5m2, np.float32)}, "_scale", (96, 1))
    (result,) = _same_measurements(fp8, plain, ["int4"])
    assert "fp8 (e5m2)" in result.dequantized


def test_a_scale_in_another_shard_is_found(tmp_path):
    codes, scales, dequantized = _encode(_weights(256, 256, 6), (128, 128))
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({_UP: codes}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({_UP + "_scale_inv": scales}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        _UP: "model-00001-of-00002.safetensors", _UP + "_scale_inv": "model-00002-of-00002.safetensors"}}))
    (folder / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "fp8",
                                                                            "weight_block_size": [128, 128]}}))
    np.testing.assert_array_equal(read_rows(open_checkpoint(folder).by_name[_UP], slice(None)), dequantized)


def _fp8_folder(tmp_path: Path, tensors: dict, quantization: dict | None) -> Path:
    save_file(tensors, str(tmp_path / "model.safetensors"))
    if quantization is not None:
        (tmp_path / "config.json").write_text(json.dumps({"quantization_config": quantization}))
    return tmp_path


_DEEPSEEK = {"quant_method": "fp8", "weight_block_size": [128, 128]}


def test_an_fp8_weight_without_its_scale_is_named(tmp_path):
    codes, _, _ = _encode(_weights(128, 128, 7), (128, 128))
    folder = _fp8_folder(tmp_path, {_UP: codes, "model.norm.weight": np.ones(8, np.float32)}, _DEEPSEEK)
    with pytest.raises(DataError, match=rf"fp8 weight '{_UP}' has no float scale: '{_UP}_scale_inv' is not in"):
        open_checkpoint(folder)


def test_a_scale_of_no_known_shape_is_named(tmp_path):
    codes, _, _ = _encode(_weights(256, 256, 8), (128, 128))
    folder = _fp8_folder(tmp_path, {_UP: codes, _UP + "_scale_inv": np.ones((3, 2), np.float32)}, _DEEPSEEK)
    with pytest.raises(DataError, match=r"has scale '.*_scale_inv' of shape \[3, 2\], which is not one per tensor, "
                                        r"per row or per 128x128 block"):
        open_checkpoint(folder)


def test_a_nan_scale_is_named(tmp_path):
    codes, scales, _ = _encode(_weights(256, 256, 9), (128, 128))
    scales[1, 0] = np.nan
    folder = _fp8_folder(tmp_path, {_UP: codes, _UP + "_scale_inv": scales}, _DEEPSEEK)
    with pytest.raises(DataError, match=rf"tensor '{_UP}_scale_inv' in .* holds nan or inf"):
        measure_mse(folder, ["int4"], law=None, rel_err=0.05)


@pytest.mark.parametrize(("case", "quantization", "extra"), [
    ("no config.json", None, {}),
    ("a layout uscl does not know", {"quant_method": "modelopt", "quant_algo": "FP8"}, {}),
    ("a zero point", {"quant_method": "compressed-tensors"}, {_UP + "_zero_point": np.zeros((128, 1), np.float32)}),
    ("integer codes beside fp8", _DEEPSEEK, {"model.layers.0.mlp.gate_proj.qweight": np.zeros((16, 128), np.int32)}),
])
def test_other_fp8_checkpoints_stay_refused(tmp_path, case, quantization, extra):
    codes, scales, _ = _encode(_weights(128, 128, 10), (1, 128))
    suffix = "_scale_inv" if quantization is _DEEPSEEK else "_scale"
    scale = scales.reshape(128, 1) if suffix == "_scale" else np.ones((1, 1), np.float32)
    folder = _fp8_folder(tmp_path, {_UP: codes, _UP + suffix: scale, **extra}, quantization)
    with pytest.raises(DataError, match="is already quantized"):
        select_layers(open_checkpoint(folder))


def test_cli_notes_the_dequantization_and_the_json_says_it(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from gmse_cli.schema import output_schema

    fp8, _ = _pair(tmp_path, _DEEPSEEK, {_UP: (_weights(128, 256, 11), (128, 128), ml_dtypes.float8_e4m3fn,
                                              np.float32)}, "_scale_inv")
    done = subprocess.run([sys.executable, "-m", "gmse_cli", "mse", str(fp8), "-f", "int4-g128", "--json",
                           "--rel-err", "0.05"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 fp8 (e4m3) weight matrix read as code x scale" in done.stderr
    out = json.loads(done.stdout)
    jsonschema.Draft202012Validator(output_schema()).validate(out)
    assert out["results"][0]["dequantized"].startswith("1 fp8 (e4m3) weight matrix")
    # a scale of the wrong shape: one line, exit 2
    bad = tmp_path / "bad"
    bad.mkdir()
    codes, _, _ = _encode(_weights(128, 128, 12), (128, 128))
    _fp8_folder(bad, {_UP: codes, _UP + "_scale_inv": np.ones((2, 2), np.float32)}, _DEEPSEEK)
    done = subprocess.run([sys.executable, "-m", "gmse_cli", "mse", str(bad), "-f", "int4"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [done.stderr.strip()]
    assert "of shape [2, 2]" in done.stderr
