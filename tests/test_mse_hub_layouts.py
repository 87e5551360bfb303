"""`uscl mse` on checkpoint layouts people download from the Hugging Face hub, where a model
folder can lie about itself or hold something uscl does not measure:

- an index whose weight_map names a tensor no shard holds (an interrupted or mixed download)
  is refused, naming the tensor, instead of silently measuring fewer layers;
- a folder holding several models in subfolders (a diffusers pipeline's text_encoder/, unet/,
  vae/) is refused, listing them, instead of measuring the first alone;
- a folder with only pickled ``pytorch_model.bin`` weights is refused naming that file;
- a layer the patterns name but stored as integers (already-quantized I8/U8) is named with its
  dtype when nothing else is selected;
- an already-quantized checkpoint (GPTQ/AWQ qweight, compressed-tensors weight_packed, fp8
  weights beside their weight_scale with no config.json naming the layout, bitsandbytes,
  gpt-oss MXFP4 blocks, or any config.json with another quantization_config) is refused in one
  line, instead of measuring the layers it left in floating point (or fp8 codes without their
  scales) as if they were the model (fp8 in a layout the config names is read as code x
  scale: tests/test_fp8_checkpoints.py);
- stacked MoE experts without a .weight suffix (gpt-oss's and Llama 4's (experts, in, out),
  transformers' fused Mixtral/Qwen (experts, out, in)) are measured by default, each row an
  output channel of one expert over its inputs;
- a vision-language model's image encoder and projector are left out by default, with a note,
  and measured when named;
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

import ml_dtypes
import numpy as np
import pytest

from gmse_cli.errors import DataError
from gmse_cli.realmse import measure_mse, open_checkpoint, select_layers

_CODES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("i1"): "I8", np.dtype("u1"): "U8",
          np.dtype("<i4"): "I32", np.dtype("<i8"): "I64", np.dtype(ml_dtypes.float8_e4m3fn): "F8_E4M3"}


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


class _Boom:
    """Unpickling this would run code: the file must be refused without being unpickled."""

    def __reduce__(self):
        return (pytest.fail, ("uscl unpickled a checkpoint",))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickled_weight_file_is_refused_unread(tmp_path, zipped):
    import pickle
    import zipfile

    path = tmp_path / "model.pt"
    if zipped:  # torch.save's default: a zip holding data.pkl
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps(_Boom()))
    else:  # torch.save(_use_new_zipfile_serialization=False), or pickle.dump
        path.write_bytes(pickle.dumps(_Boom(), protocol=2))
    with pytest.raises(DataError, match=r"model\.pt is a pickle \(as torch\.save writes PyTorch weights\), which uscl "
                                        r"never unpickles"):
        open_checkpoint(path)
    # a folder of them is named too, whatever torch.save's suffix
    with pytest.raises(DataError, match=r"only pickled PyTorch weights \(model\.pt\)"):
        open_checkpoint(tmp_path)


def test_a_cut_short_safetensors_file_whose_length_byte_is_0x80_is_not_called_a_pickle(tmp_path):
    # A download cut short: its header length, 384 = 0x180 (a multiple of 8, as safetensors pads
    # it), begins with the byte 0x80 that begins a pickle; it is a truncated safetensors file.
    path = tmp_path / "model.safetensors"
    _write(path, {"model.layers.0.mlp.up_proj.weight": _w(8, 128)})
    whole = path.read_bytes()
    (length,) = struct.unpack("<Q", whole[:8])
    header = whole[8 : 8 + length].rstrip(b" ")
    padded = header + b" " * (384 - len(header))
    path.write_bytes((struct.pack("<Q", 384) + padded + whole[8 + length :])[:200])
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(DataError, match=r"is not a safetensors file \(header length 384 does not fit its 200 bytes\)"):
        open_checkpoint(path)


def test_integer_weights_are_named_with_their_dtype(tmp_path):
    rng = np.random.default_rng(0)
    _write(tmp_path / "model.safetensors", {
        "layers.0.self_attn.q_proj.weight": rng.integers(-127, 127, (8, 128)).astype(np.int8),
        "layers.0.self_attn.q_proj.input_stats": _w(8, 1),
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


def _llama_layer(q: np.ndarray) -> dict[str, np.ndarray]:
    return {"model.embed_tokens.weight": _w(64, 128, 5), "model.layers.0.self_attn.q_proj.weight": q,
            "model.norm.weight": _w(1, 128, 6)[0], "lm_head.weight": _w(64, 128, 7)}


_H, _I = 128, 256


_QUANTIZED = [
    ("GPTQ", {"model.layers.0.mlp.down_proj.qweight": np.zeros((_I // 8, _H), np.int32),
              "model.layers.0.mlp.down_proj.qzeros": np.zeros((_I // 128, _H // 8), np.int32),
              "model.layers.0.mlp.down_proj.scales": _w(_I // 128, _H).astype(np.float16)},
     {"quant_method": "gptq", "bits": 4, "group_size": 128}),
    ("compressed-tensors int4", {"model.layers.0.mlp.down_proj.weight_packed": np.zeros((_H, _I // 8), np.int32),
                                 "model.layers.0.mlp.down_proj.weight_scale": _w(_H, _I // 128)},
     {"quant_method": "compressed-tensors", "format": "pack-quantized"}),
    ("fp8 per channel", {"model.layers.0.mlp.down_proj.weight": (_w(_H, _I) * 1e4).astype(ml_dtypes.float8_e4m3fn),
                         "model.layers.0.mlp.down_proj.weight_scale": _w(_H, 1)},
     {"quant_method": "compressed-tensors", "format": "float-quantized"}),
    ("fp8 DeepSeek blocks", {"model.layers.0.mlp.down_proj.weight": (_w(_H, _I) * 1e4).astype(ml_dtypes.float8_e4m3fn),
                             "model.layers.0.mlp.down_proj.weight_scale_inv": _w(_H // 128, _I // 128)},
     {"quant_method": "fp8", "weight_block_size": [128, 128]}),
    ("bitsandbytes nf4", {"model.layers.0.mlp.down_proj.weight": np.zeros((_H * _I // 2, 1), np.uint8),
                          "model.layers.0.mlp.down_proj.weight.absmax": _w(1, _H * _I // 64)[0]},
     {"quant_method": "bitsandbytes", "load_in_4bit": True}),
    ("gpt-oss mxfp4", {"model.layers.0.mlp.experts.down_proj_blocks": np.zeros((2, _H, _I // 32, 16), np.uint8),
                       "model.layers.0.mlp.experts.down_proj_scales": np.zeros((2, _H, _I // 32), np.uint8)},
     {"quant_method": "mxfp4"}),
]


# fp8 weights beside their scales and a config.json naming the layout are read as code x scale
# (tests/test_fp8_checkpoints.py); without the config they stay refused.
@pytest.mark.parametrize(("layout", "tensors", "config", "with_config"), [
    (*case, with_config) for case in _QUANTIZED for with_config in (True, False)
    if not (with_config and case[0].startswith("fp8"))
])
def test_already_quantized_checkpoint_is_refused(tmp_path, layout, tensors, config, with_config):
    # The layers a quantizer leaves in floating point (here q_proj, beside the embeddings, norm
    # and head) are not the model: measuring them alone, or fp8 codes without their scales,
    # would report a number for a model nobody deploys.
    _write(tmp_path / "model.safetensors", {**_llama_layer(_w(_H, _H, 3)), **tensors})
    if with_config:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": config}))
        evidence = rf"config\.json has a quantization_config \(quant_method '{config['quant_method']}'\)"
    else:
        evidence = r"it holds tensor 'model\.layers\.0\.mlp\.\S+' \(\w+ \[[\d, ]+\]\), which quantizers write"
    with pytest.raises(DataError, match=rf"is already quantized \({evidence}\): .*unquantized model"):
        measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05)
    with pytest.raises(DataError, match=r"is already quantized"):
        select_layers(open_checkpoint(tmp_path), include=["re:q_proj"])


@pytest.mark.parametrize("config", [
    {"quant_method": "fp8", "weight_block_size": [128, 128]},  # DeepSeek's, kept by a bf16 conversion
    {"quant_method": "compressed-tensors", "format": "dense", "config_groups": {},
     "sparsity_config": {"format": "dense", "sparsity_structure": "2:4"}},  # pruned, not quantized
])
def test_float_checkpoint_whose_config_names_a_quantization_is_measured(tmp_path, config):
    # A config.json copied beside weights that are all floats (a dequantized conversion, a
    # sparse-only compressed-tensors model stored dense) describes no packed codes: measure them.
    q = _w(_H, _H, 3)
    _write(tmp_path / "model.safetensors", {**_llama_layer(q), "model.position_ids": np.zeros((1, 8), np.int64)})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": config}))
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05)
    assert [layer.name for layer in result.layers] == ["model.layers.0.self_attn.q_proj.weight"]
    assert result.mse == pytest.approx(_int4_g128(q), rel=1e-6)


def test_float_layer_owning_a_tensor_named_like_a_quantizers_is_measured(tmp_path):
    # a learned per-channel scale in float32 beside float weights: no codes, nothing quantized
    q = _w(_H, _H, 3)
    _write(tmp_path / "model.safetensors", {**_llama_layer(q), "model.layers.0.self_attn.q_proj.weight_scale": _w(_H, 1)})
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05)
    assert result.mse == pytest.approx(_int4_g128(q), rel=1e-6)


def _scaled_outputs(shape: tuple[int, ...], out_axis: int, seed: int) -> np.ndarray:
    """Gaussian weights whose output channels differ in scale by up to 30x, as trained ones do:
    a format grouping along the output axis would mix them, one grouping along the inputs not."""
    x = (0.02 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)
    scale = np.exp(np.random.default_rng(seed + 100).uniform(0, np.log(30), shape[out_axis]))
    view = [1] * len(shape)
    view[out_axis] = shape[out_axis]
    return (x * scale.reshape(view)).astype(np.float32)


@pytest.mark.parametrize(("model_type", "in_out"), [("gpt_oss", True), ("llama4", True), (None, True),
                                                     ("mixtral", False), (None, False)])
def test_stacked_experts_are_measured_along_their_inputs(tmp_path, model_type, in_out):
    experts = 3
    if in_out:  # gpt-oss / Llama 4: x @ W[e], (experts, in, out)
        gate_up = _scaled_outputs((experts, _H, 2 * _I), 2, 1)
        down = _scaled_outputs((experts, _I, _H), 2, 2)
        rows = {"gate_up_proj": np.swapaxes(gate_up, 1, 2), "down_proj": np.swapaxes(down, 1, 2)}
    else:  # transformers' fused Mixtral/Qwen: F.linear(x, W[e]), (experts, out, in)
        gate_up = _scaled_outputs((experts, 2 * _I, _H), 1, 1)
        down = _scaled_outputs((experts, _H, _I), 1, 2)
        rows = {"gate_up_proj": gate_up, "down_proj": down}
    q = _w(_H, _H, 3)
    router = "model.layers.0.mlp.router.weight" if in_out else "model.layers.0.block_sparse_moe.gate.weight"
    _write(tmp_path / "model.safetensors", {
        **_llama_layer(q), router: _w(experts, _H, 8), "model.layers.0.mlp.experts.gate_up_proj": gate_up,
        "model.layers.0.mlp.experts.gate_up_proj_bias": _w(experts, 2 * _I, 4),
        "model.layers.0.mlp.experts.down_proj": down})
    if model_type is not None:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    for sample in (None, 0.5):
        (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05, sample=sample)
        got = {layer.name.rsplit(".", 1)[-1]: layer for layer in result.layers}
        # embeddings, norm, head, bias and the router are not, as GPTQ and compressed-tensors leave them
        assert [layer.name for layer in result.layers] == [
            "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.experts.gate_up_proj",
            "model.layers.0.mlp.experts.down_proj"]
        for name, x in rows.items():
            matrix = x.reshape(-1, x.shape[-1])  # one row per (expert, output channel), over the inputs
            assert got[name].shape == matrix.shape
            if sample is None:
                assert got[name].mse == pytest.approx(_int4_g128(matrix), rel=1e-6)
        if sample is None:
            total = sum(_int4_g128(m) * m.size for m in (q, *(x.reshape(-1, x.shape[-1]) for x in rows.values())))
            assert result.mse == pytest.approx(total / (q.size + gate_up.size + down.size), rel=1e-6)


@pytest.mark.parametrize("chunk_bytes", [64, 4096, 2**25])
def test_experts_in_out_rows_read_in_any_chunks(tmp_path, chunk_bytes):
    from gmse_cli.realmse.tensorfile import iter_row_chunks, read_rows

    x, down = (np.random.default_rng(9).standard_normal(s).astype(np.float32) for s in ((3, 40, 24), (3, 12, 40)))
    # (experts, in, out): gate_up_proj's 2I = 24 outputs beside down_proj's I = 12 inputs
    _write(tmp_path / "model.safetensors", {"mlp.experts.gate_up_proj": x, "mlp.experts.down_proj": down})
    (info,) = [t for t in open_checkpoint(tmp_path).tensors if t.name.endswith("gate_up_proj")]
    expected = np.swapaxes(x, 1, 2).reshape(-1, 40)  # row e * 24 + c: expert e's output channel c
    rows = np.array([0, 5, 23, 24, 30, 47, 48, 71])  # across all three experts and their edges
    assert info.transposed and (info.rows, info.row_length) == (72, 40)
    np.testing.assert_array_equal(read_rows(info, rows, chunk_bytes=chunk_bytes), expected[rows])
    np.testing.assert_array_equal(np.concatenate(list(iter_row_chunks(info, chunk_bytes=chunk_bytes))), expected)


def test_one_dimensional_convolution_is_measured_over_its_fan_in(tmp_path):
    # Whisper's encoder conv2 and wav2vec2's conv layers are (out, in, k): a row of k = 3 taps is
    # no group a format quantizes; PyTorch's per-channel view is weight.flatten(1), (out, in * k).
    conv = _w(16, 128 * 3, seed=11).reshape(16, 128, 3)
    experts = (0.02 * np.random.default_rng(12).standard_normal((2, 8, 128))).astype(np.float32)
    _write(tmp_path / "model.safetensors", {"model.encoder.conv2.weight": conv, "model.experts.w1.weight": experts})
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05)
    got = {layer.name: layer for layer in result.layers}
    assert got["model.encoder.conv2.weight"].shape == (16, 384)
    assert got["model.encoder.conv2.weight"].mse == pytest.approx(_int4_g128(conv.reshape(16, -1)), rel=1e-6)
    # stacked experts (E, out, in) stay one row per expert's output channel
    assert got["model.experts.w1.weight"].shape == (16, 128)
    assert got["model.experts.w1.weight"].mse == pytest.approx(_int4_g128(experts.reshape(16, 128)), rel=1e-6)


def test_a_vision_language_model_measures_its_language_model(tmp_path):
    # LLaVA's and Gemma 3's vision_tower and multi_modal_projector, Qwen2-VL's visual: deployments
    # keep the image encoder in bf16, and the law is fitted to language models
    lm = _w(_H, _H, 3)
    encoder = {"vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight": 10 * _w(_H, _H, 4),
               "multi_modal_projector.linear_1.weight": _w(_H, _H, 5),
               "model.visual.blocks.0.attn.qkv.weight": _w(3 * _H, _H, 6)}
    _write(tmp_path / "model.safetensors", {**encoder, "language_model.model.layers.0.self_attn.q_proj.weight": lm,
                                            "language_model.model.embed_tokens.weight": _w(64, _H, 7)})
    notes: list[str] = []
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05, warn=notes.append)
    assert [layer.name for layer in result.layers] == ["language_model.model.layers.0.self_attn.q_proj.weight"]
    assert result.mse == pytest.approx(_int4_g128(lm), rel=1e-6)
    assert [n for n in notes if "vision encoder" in n] == [
        "left out 3 weight matrices of the vision encoder (vision_tower.vision_model.encoder.layers.0.self_attn."
        "q_proj.weight, ...): the language model is measured, as deployments quantize it; --include with their "
        "names measures them"]
    # named, they are measured, with no note
    notes.clear()
    (every,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05, include=["re:proj|qkv|linear_1"],
                           warn=notes.append)
    assert len(every.layers) == 4 and not [n for n in notes if "vision encoder" in n]


def test_a_vision_model_alone_is_measured_whole(tmp_path):
    # CLIP's or SigLIP's vision tower on its own has no language model to measure instead
    q, k = _w(_H, _H, 8), _w(_H, _H, 9)
    _write(tmp_path / "model.safetensors", {"vision_model.encoder.layers.0.self_attn.q_proj.weight": q,
                                            "vision_model.encoder.layers.0.self_attn.k_proj.weight": k})
    notes: list[str] = []
    (result,) = measure_mse(tmp_path, ["int4-g128"], law=None, rel_err=0.05, warn=notes.append)
    assert len(result.layers) == 2 and not notes
    # the parameter-weighted mean of the two layers' MSEs (equal sizes)
    assert result.mse == pytest.approx((_int4_g128(q) + _int4_g128(k)) / 2, rel=1e-6)
