"""Files downloaded from others (format files, checkpoint folders, safetensors indexes) treated as
hostile: each bad one is one error line (exit 2), and none makes uscl read outside what it was asked."""

from __future__ import annotations

import json
import struct

import conftest
import numpy as np
import pytest

assert conftest.REPO_ROOT.is_dir()


def _shard(path, names, seed=0):
    """A small valid safetensors file of 64 x 64 float32 Gaussians, one per name."""
    header, offset = {}, 0
    for name in names:
        header[name] = {"dtype": "F32", "shape": [64, 64], "data_offsets": [offset, offset + 64 * 64 * 4]}
        offset += 64 * 64 * 4
    raw = json.dumps(header).encode()
    data = np.random.default_rng(seed).standard_normal(offset // 4).astype("<f4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _one_error_line(res):
    assert res.code == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


@pytest.mark.parametrize("bits", ["1e308", "1e-12"])
def test_vq_bits_overflowing_or_vanishing_is_one_line(run_cli, tmp_path, bits):
    # bits * dim = inf made round() raise OverflowError (a traceback, exit 1); bits * dim rounding
    # to 0 asked for a one-codeword codebook and failed only inside the compressor
    spec = tmp_path / "vq.toml"
    spec.write_text(f'name = "v"\n[[stages]]\nkind = "vq"\ndim = 2\nbits = {bits}\n')
    line = _one_error_line(run_cli("gmse", str(spec)))
    assert "bits*dim" in line


def test_index_naming_many_missing_shards_is_a_short_line(run_cli, tmp_path):
    # 300,000 missing shard names made one 5 MB error line
    _shard(tmp_path / "m" / "model-00001.safetensors", ["a.weight"])
    weight_map = {f"l{i}.weight": f"s{i:06d}.safetensors" for i in range(300_000)}
    weight_map["a.weight"] = "model-00001.safetensors"
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    line = _one_error_line(run_cli("mse", str(tmp_path / "m"), "-f", "int4"))
    assert len(line) < 1000 and "s000000.safetensors" in line and "299,997 more" in line


@pytest.mark.parametrize("pointer", ["../other/step-1", "{other}/step-1"])
def test_run_folder_latest_pointing_elsewhere_is_not_followed(run_cli, tmp_path, pointer):
    # a run folder's `latest` naming another folder (relative with '..', or absolute) measured
    # that folder's weights, which the user never named
    other = _shard(tmp_path / "other" / "step-1" / "model.safetensors", ["secret.weight"]).parent.parent
    run = tmp_path / "run"
    run.mkdir()
    (run / "latest").write_text(pointer.format(other=other))
    line = _one_error_line(run_cli("mse", str(run), "-f", "int4", "--json"))
    assert "no .safetensors files" in line and "secret" not in line


def test_run_folder_latest_inside_is_followed(run_cli, tmp_path):
    _shard(tmp_path / "run" / "step-000000003" / "model.safetensors", ["a.weight"])
    (tmp_path / "run" / "latest").write_text("step-000000003")
    res = run_cli("mse", str(tmp_path / "run"), "-f", "int4", "--json")
    assert res.code == 0, res.stderr
    assert [layer["name"] for layer in json.loads(res.stdout)["results"][0]["layers"]] == ["a.weight"]


@pytest.mark.parametrize("ref", ["../../elsewhere", "{abs}"])
def test_hub_ref_pointing_outside_snapshots_is_refused(run_cli, tmp_path, ref):
    elsewhere = _shard(tmp_path / "elsewhere" / "model.safetensors", ["secret.weight"]).parent
    repo = tmp_path / "models--org--name"
    _shard(repo / "snapshots" / "abc" / "model.safetensors", ["a.weight"])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ref.format(abs=elsewhere))
    line = _one_error_line(run_cli("mse", str(repo), "-f", "int4"))
    assert "is not in" in line and "secret" not in line


def test_hub_ref_inside_snapshots_is_followed(run_cli, tmp_path):
    repo = tmp_path / "models--org--name"
    _shard(repo / "snapshots" / "abc" / "model.safetensors", ["a.weight"])
    _shard(repo / "snapshots" / "def" / "model.safetensors", ["b.weight"])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("def\n")
    res = run_cli("mse", str(repo), "-f", "int4", "--json")
    assert res.code == 0, res.stderr
    assert [layer["name"] for layer in json.loads(res.stdout)["results"][0]["layers"]] == ["b.weight"]


def test_codebook_npy_whose_header_lies_about_its_shape_is_one_line(run_cli, tmp_path):
    # np.load sized its array from the header: 1 KiB claiming (2^40, 2) float64 asked for 16 TiB
    # (a MemoryError traceback, exit 1)
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((16, 2)))
    raw = buffer.getvalue()
    assert b"'shape': (16, 2), }" in raw
    (tmp_path / "lie.npy").write_bytes(raw.replace(b"'shape': (16, 2), }", b"'shape': (1099511627776, 2), }"))
    spec = tmp_path / "vq.toml"
    spec.write_text('name = "v"\n[[stages]]\nkind = "vq"\ndim = 2\nbits = 2\ncodebook = "lie.npy"\n')
    line = _one_error_line(run_cli("gmse", str(spec)))
    assert "(1099511627776, 2)" in line and "(16, 2)" in line
