"""Where `uscl mse` finds a checkpoint's weights: a sharded model's index file, a folder, a
Hugging Face hub-cache repository or snapshot; and what it says when a pattern matches nothing.

Checkpoints are small safetensors files written here from the format's definition (a u64
little-endian header length, a JSON header, the raw little-endian tensor bytes), and the hub
cache is laid out as huggingface_hub lays it out (blobs, refs/main, snapshots/<commit>/ with
links into blobs).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.errors import DataError
from gmse_cli.realmse import (
    checkpoint_name,
    measure_mse,
    model_order,
    open_checkpoint,
    select_layers,
)


def _write(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _bert(blocks: int, seed: int = 0) -> dict[str, np.ndarray]:
    """BERT-style tensor names (no 'mlp' anywhere), 2-D weights of 128-long rows."""
    rng = np.random.default_rng(seed)
    out = {"embeddings.word_embeddings.weight": rng.standard_normal((50, 128))}
    for b in range(blocks):
        for kind in ("attention.self.query", "intermediate.dense", "output.dense"):
            out[f"encoder.layer.{b}.{kind}.weight"] = rng.standard_normal((16, 128))
        out[f"encoder.layer.{b}.output.LayerNorm.weight"] = np.ones(128)
    return out


def _sharded(folder: Path, tensors: dict[str, np.ndarray], shards: int = 3) -> Path:
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        part = {n: tensors[n] for n in names[s::shards]}
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        _write(folder / file, part)
        weight_map.update(dict.fromkeys(part, file))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_index_file_and_its_folder_are_the_same_checkpoint(tmp_path):
    tensors = _bert(3)
    index = _sharded(tmp_path, tensors)
    by_index, by_folder = open_checkpoint(index), open_checkpoint(tmp_path)
    assert len(by_index.files) == 3
    assert {t.name for t in by_index.tensors} == set(tensors) == {t.name for t in by_folder.tensors}
    (a,) = measure_mse(index, ["int4"], law=None, rel_err=1e-2)
    (b,) = measure_mse(tmp_path, ["int4"], law=None, rel_err=1e-2)
    assert a.mse == b.mse and len(a.layers) == 9


def test_index_file_naming_a_missing_shard(tmp_path):
    index = _sharded(tmp_path, _bert(2))
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(DataError, match="shards that are missing: model-00002-of-00003"):
        open_checkpoint(index)
    index.write_text("{}")
    with pytest.raises(DataError, match="not a safetensors index"):
        open_checkpoint(index)


def _hub_cache(root: Path, *, main: str | None) -> Path:
    """models--org--tiny with two snapshots; refs/main names ``main`` (None: no refs)."""
    repo = root / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    for commit, seed in (("a1" * 20, 1), ("b2" * 20, 2)):
        blob = repo / "blobs" / f"weights{seed}"
        _write(blob, _bert(2, seed=seed))
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        os.symlink(os.path.relpath(blob, snap), snap / "model.safetensors")
        (snap / "config.json").write_text(json.dumps({"model_type": "bert"}))
    if main is not None:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(main)
    return repo


def test_hub_cache_repository_uses_the_snapshot_refs_main_names(tmp_path):
    repo = _hub_cache(tmp_path, main="b2" * 20)
    snap = repo / "snapshots" / ("b2" * 20)
    for path in (repo, repo / "snapshots", snap):
        ckpt = open_checkpoint(path)
        assert [f.parent for f in ckpt.files] == [snap]
    # the weights are the linked blob's: seed 2, not the other snapshot's seed 1
    (r,) = measure_mse(repo, ["int4"], law=None, rel_err=1e-2, include=["encoder.layer.0.output.dense.weight"])
    expected = _bert(2, seed=2)["encoder.layer.0.output.dense.weight"]
    (other,) = measure_mse(repo / "snapshots" / ("a1" * 20), ["int4"], law=None, rel_err=1e-2,
                           include=["encoder.layer.0.output.dense.weight"])
    assert r.layers[0].shape == expected.shape and r.mse != other.mse
    assert checkpoint_name(repo) == checkpoint_name(snap / "model.safetensors") == "org/tiny"


def test_hub_cache_without_refs(tmp_path):
    repo = _hub_cache(tmp_path, main=None)
    with pytest.raises(DataError, match="no refs/main and 2 snapshots .*pass one of them"):
        open_checkpoint(repo)
    (repo / "snapshots" / ("a1" * 20) / "model.safetensors").unlink()
    (repo / "snapshots" / ("a1" * 20) / "config.json").unlink()
    (repo / "snapshots" / ("a1" * 20)).rmdir()
    assert open_checkpoint(repo).files[0].parent.name == "b2" * 20  # the only snapshot


def test_pattern_matching_nothing_names_the_layers_there_are(tmp_path, run_cli):
    path = tmp_path / "bert.safetensors"
    _write(path, _bert(12))
    with pytest.raises(DataError) as err:
        select_layers(open_checkpoint(path), include=["re:mlp"])
    message = str(err.value)
    assert "\n" not in message
    assert "encoder.layer.*.attention.self.query.weight" in message
    assert "encoder.layer.*.intermediate.dense.weight" in message
    assert "embeddings" not in message and "LayerNorm" not in message
    res = run_cli("mse", str(path), "-f", "int4", "--include", "re:mlp")
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "intermediate.dense" in res.stderr


def test_model_order_compares_numbers_as_numbers():
    names = ["layers.10.mlp.weight", "layers.2.mlp.weight", "layers.1.attn.weight", "layers.1.mlp.weight", "head"]
    assert sorted(names, key=model_order) == [
        "head", "layers.1.attn.weight", "layers.1.mlp.weight", "layers.2.mlp.weight", "layers.10.mlp.weight"]


@pytest.mark.parametrize("shard", [5, None, "", True, 1.5])
def test_index_naming_a_shard_that_is_not_a_file_name(tmp_path, shard):
    index = _sharded(tmp_path, _bert(1), shards=1)
    index.write_text(json.dumps({"weight_map": {"encoder.layer.0.output.dense.weight": shard}}))
    with pytest.raises(DataError, match="weight_map names a shard"):
        open_checkpoint(index)


def test_tensors_sharing_bytes_are_a_corrupt_header(tmp_path):
    # Two header entries over the same bytes would measure one tensor's data as the other's.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 64)).astype("<f4"), rng.standard_normal((8, 64)).astype("<f4")
    for second in ([0, a.nbytes], [a.nbytes - 4, 2 * a.nbytes - 4]):
        header = {"a.weight": {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, a.nbytes]},
                  "b.weight": {"dtype": "F32", "shape": [8, 64], "data_offsets": second}}
        head = json.dumps(header).encode()
        path = tmp_path / "w.safetensors"
        path.write_bytes(struct.pack("<Q", len(head)) + head + a.tobytes() + b.tobytes())
        with pytest.raises(DataError, match="'a.weight' and 'b.weight' overlap"):
            open_checkpoint(path)


def test_f64_values_beyond_float32_are_named_without_warnings(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 64)) * 1e300
    raw = x.astype("<f8").tobytes()
    head = json.dumps({"a.weight": {"dtype": "F64", "shape": [8, 64], "data_offsets": [0, len(raw)]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + raw)
    with np.errstate(all="raise"), pytest.raises(DataError, match="beyond float32's range"):
        measure_mse(path, ["int4"], law=None, rel_err=1e-2)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE",
                                   "..\\outside.safetensors", "C:outside.safetensors"])
def test_index_naming_a_shard_outside_the_model_folder_is_refused(tmp_path, shard):
    # transformers reads shards only from the index's folder; a file elsewhere that happens to
    # exist must not be measured as part of the model.
    model = tmp_path / "model"
    model.mkdir()
    _write(tmp_path / "outside.safetensors", {"encoder.layer.0.output.dense.weight": np.ones((4, 128))})
    shard = str(tmp_path / "outside.safetensors") if shard == "ABSOLUTE" else shard
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"encoder.layer.0.output.dense.weight": shard}}))
    with pytest.raises(DataError, match=r"weight_map names shard .*outside\.safetensors.*outside the model folder"):
        open_checkpoint(model)


def test_index_naming_a_shard_in_a_subfolder_is_read(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "s.safetensors", {"encoder.layer.0.output.dense.weight": np.ones((4, 128))})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"encoder.layer.0.output.dense.weight": "./sub/../sub/s.safetensors"}}))
    assert [t.name for t in open_checkpoint(tmp_path).tensors] == ["encoder.layer.0.output.dense.weight"]
