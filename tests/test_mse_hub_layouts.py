"""`uscl mse` on checkpoint layouts people download from the Hugging Face hub, where a model
folder can lie about itself or hold something uscl does not measure:

- an index whose weight_map names a tensor no shard holds (an interrupted or mixed download)
  is refused, naming the tensor, instead of silently measuring fewer layers;
- a folder holding several models in subfolders (a diffusers pipeline's text_encoder/, unet/,
  vae/) is refused, listing them, instead of measuring the first alone;
- a folder with only pickled ``pytorch_model.bin`` weights is refused naming that file;
- a layer the patterns name but stored as integers (already-quantized I8/U8) is named with its
  dtype when nothing else is selected;
- an all-zero weight matrix (a zero-initialized LoRA B or ControlNet zero convolution) has no
  relative MSE (0/0): it is skipped with that reason, never reported as MSE 0 and weighted
  into the overall mean.

Files are written from the safetensors definition (u64 header length, JSON header, raw
little-endian bytes); expected MSEs come from a quantizer written here from the README's
int4-g128 rule (signed -7..7, absmax per group of 128, fp16 scales).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.errors import DataError
from gmse_cli.realmse import measure_mse, open_checkpoint, select_layers

_CODES = {np.dtype("<f4"): "F32", np.dtype("i1"): "I8", np.dtype("u1"): "U8"}


def _write(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        x = np.ascontiguousarray(x)
        raw = x.tobytes()
        header[name] = {"dtype": _CODES[x.dtype], "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _w(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return (0.02 * np.random.default_rng(seed).standard_normal((rows, cols))).astype(np.float32)


def _int4_g128(x: np.ndarray) -> float:
    """Relative error of signed int4 (-7..7), absmax per 128, fp16 scales."""
    x = x.astype(np.float64)
    g = x.reshape(-1, 128)
    scale = (np.abs(g).max(axis=1, keepdims=True) / 7).astype(np.float16).astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.where(scale > 0, np.clip(np.round(g / safe), -7, 7) * scale, 0.0).reshape(x.shape)
    return float(((x - q) ** 2).sum() / (x**2).sum())


def _sharded(folder: Path, weight_map: dict[str, str], shards: dict[str, dict[str, np.ndarray]]) -> None:
    for name, tensors in shards.items():
        _write(folder / name, tensors)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_index_naming_a_tensor_no_shard_holds_is_refused(tmp_path):
    a, b = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    shards = {a: {"layers.0.mlp.up_proj.weight": _w(8, 128)}, b: {"layers.1.mlp.up_proj.weight": _w(8, 128, 1)}}
    weight_map = {"layers.0.mlp.up_proj.weight": a, "layers.1.mlp.up_proj.weight": b,
                  "layers.2.mlp.up_proj.weight": b}  # promised, but the shard lacks it
    _sharded(tmp_path, weight_map, shards)
    for path in (tmp_path, tmp_path / "model.safetensors.index.json"):
        with pytest.raises(DataError, match=r"weight_map puts tensor 'layers\.2\.mlp\.up_proj\.weight' in "
                                            r"model-00002-of-00002\.safetensors, but no shard holds it"):
            open_checkpoint(path)


def test_index_whose_tensors_are_all_present_is_read(tmp_path):
    a, b = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    shards = {a: {"layers.0.mlp.up_proj.weight": _w(8, 128)},
              b: {"layers.1.mlp.up_proj.weight": _w(8, 128, 1), "layers.1.extra.weight": _w(4, 128, 2)}}
    # a tensor a shard holds beyond the map is read, as transformers reads whole shards
    _sharded(tmp_path, {"layers.0.mlp.up_proj.weight": a, "layers.1.mlp.up_proj.weight": b}, shards)
    names = {t.name for t in open_checkpoint(tmp_path).tensors}
    assert names == {"layers.0.mlp.up_proj.weight", "layers.1.mlp.up_proj.weight", "layers.1.extra.weight"}


def test_folder_of_several_models_is_refused(tmp_path):
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{}")
    _write(tmp_path / "text_encoder" / "model.safetensors", {"enc.mlp.up_proj.weight": _w(8, 128)})
    _write(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", {"unet.mlp.up_proj.weight": _w(8, 128)})
    _write(tmp_path / "vae" / "diffusion_pytorch_model.safetensors", {"vae.mlp.up_proj.weight": _w(8, 128)})
    with pytest.raises(DataError, match=r"3 subfolders with checkpoints \(text_encoder, unet, vae\); pass one of them"):
        open_checkpoint(tmp_path)
    # one of them, or a folder holding a single model one level down, is read
    assert [t.name for t in open_checkpoint(tmp_path / "unet").tensors] == ["unet.mlp.up_proj.weight"]
    _write(tmp_path / "single" / "model" / "model.safetensors", {"a.mlp.up_proj.weight": _w(8, 128)})
    assert [t.name for t in open_checkpoint(tmp_path / "single").tensors] == ["a.mlp.up_proj.weight"]


def test_folder_with_only_pickled_weights_names_them(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    with pytest.raises(DataError, match=r"only pickled PyTorch weights \(pytorch_model\.bin\)"):
        open_checkpoint(tmp_path)


def test_integer_weights_are_named_with_their_dtype(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "model.safetensors", {
        "layers.0.self_attn.q_proj.weight": rng.integers(-127, 127, (8, 128)).astype(np.int8),
        "layers.0.self_attn.q_proj.weight_scale": _w(8, 1),
        "layers.0.mlp.down_proj.weight": rng.integers(0, 255, (8, 64)).astype(np.uint8),
    })
    ckpt = open_checkpoint(tmp_path)
    with pytest.raises(DataError, match=r"tensor 'layers\.0\.self_attn\.q_proj\.weight' matches but holds I8 values"):
        select_layers(ckpt, include=["*q_proj.weight"])
    with pytest.raises(DataError, match=r"holds I8 values \(1 more likewise\)"):
        select_layers(ckpt)


@pytest.mark.parametrize("sample", [None, 0.5])
def test_all_zero_layer_is_skipped_not_measured_as_zero(tmp_path, sample):
    live = _w(16, 256)
    _write(tmp_path / "model.safetensors", {
        "layers.0.mlp.up_proj.weight": live,
        "layers.0.lora_B.weight": np.zeros((64, 256), np.float32),  # 4x the live layer's params
    })
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05, sample=sample)
    assert [layer.name for layer in result.layers] == ["layers.0.mlp.up_proj.weight"]
    assert [s.name for s in result.skipped] == ["layers.0.lora_B.weight"]
    assert "all zeros" in result.skipped[0].reason
    assert result.params == live.size
    if sample is None:
        assert result.mse == pytest.approx(_int4_g128(live), rel=1e-6)


def test_checkpoint_of_only_zero_layers_is_refused(tmp_path):
    _write(tmp_path / "model.safetensors", {"layers.0.mlp.up_proj.weight": np.zeros((8, 128), np.float32)})
    with pytest.raises(DataError, match=r"all zeros"):
        measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05)
