"""Which safetensors layouts `uscl mse` reads: exactly those the safetensors reference reader
(the Rust crate behind the ``safetensors`` package) reads.

The reference walks the tensors sorted by their data offsets and refuses a header whose data
ranges overlap, leave a hole, do not start at 0, or do not end at the end of the file (its
``InvalidOffset`` and ``MetadataIncompleteBuffer``), and a byte count that does not match dtype
and shape. Files are written here by hand from the format's definition (a u64 little-endian
header length, a JSON header, the raw bytes), in layouts generated from a seed, and the two
readers' accept/refuse decisions on the same bytes are compared.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.errors import DataError
from gmse_cli.realmse import open_checkpoint, read_tensor

safetensors = pytest.importorskip("safetensors")

_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1, "F64": 8}


def _file(path: Path, header: dict, data_len: int) -> None:
    head = json.dumps(header).encode()
    body = np.arange(data_len, dtype=np.uint8).tobytes()  # small integers: finite in every dtype
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)


def _reference_accepts(path: Path) -> bool:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            native = all(f.get_slice(n).get_dtype() in ("F32", "F16", "U8", "F64") for n in names)
        if native:  # numpy has no bfloat16: load_file cannot build those arrays
            load_file(str(path))
    except SafetensorError:
        return False
    return True


def _uscl_accepts(path: Path) -> bool:
    try:
        open_checkpoint(path)
    except DataError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message
        return False
    return True


def _layout(rng: random.Random) -> tuple[dict, int]:
    """A contiguous layout of 0-4 tensors (some of zero size), then perhaps one defect."""
    header, at = {}, 0
    for i in range(rng.randint(0, 4)):
        dtype = rng.choice(list(_BYTES))
        shape = [rng.choice([0, 1, 2, 3]), rng.choice([1, 4])]
        size = shape[0] * shape[1] * _BYTES[dtype]
        header[f"t{i}.weight"] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
    data_len = at
    names = list(header)
    defect = rng.choice(["none", "none", "shift", "start", "tail", "short", "swap", "empty-at", "same", "grow"])
    if defect == "shift" and names:  # moves one tensor: a hole before it or an overlap
        entry = header[rng.choice(names)]["data_offsets"]
        delta = rng.choice([-2, -1, 1, 2, 4])
        entry[:] = [max(0, entry[0] + delta), max(0, entry[1] + delta)]
        data_len = max(data_len, entry[1])
    elif defect == "start":  # data from offset k, not 0
        k = rng.choice([1, 4, 8])
        for name in names:
            header[name]["data_offsets"] = [o + k for o in header[name]["data_offsets"]]
        data_len += k
    elif defect == "tail":
        data_len += rng.choice([1, 3, 8])
    elif defect == "short" and data_len:
        data_len -= 1
    elif defect == "swap" and len(names) >= 2:  # other order on disk: still a tiling
        a, b = rng.sample(names, 2)
        header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]
        header[a]["shape"], header[b]["shape"] = header[b]["shape"], header[a]["shape"]
        header[a]["dtype"], header[b]["dtype"] = header[b]["dtype"], header[a]["dtype"]
    elif defect == "empty-at":  # a zero-size tensor anywhere in the data
        k = rng.randint(0, data_len + 2)
        header["z.weight"] = {"dtype": "F32", "shape": [0, 4], "data_offsets": [k, k]}
    elif defect == "same" and names:  # a second tensor over the same bytes
        header["dup.weight"] = dict(header[rng.choice(names)])
    elif defect == "grow" and names:  # one tensor's end moved: its byte count no longer fits its shape
        entry = header[rng.choice(names)]["data_offsets"]
        entry[1] += 4
        data_len += 4
    return header, data_len


@pytest.mark.parametrize("seed", range(8))
def test_uscl_reads_exactly_what_the_reference_reads(tmp_path, seed):
    rng = random.Random(seed)
    decisions = set()
    for case in range(40):
        header, data_len = _layout(rng)
        path = tmp_path / f"{case}.safetensors"
        _file(path, header, data_len)
        want = _reference_accepts(path)
        assert _uscl_accepts(path) == want, (header, data_len)
        decisions.add(want)
    assert decisions == {True, False}  # both answers were exercised


@pytest.mark.parametrize(
    "offsets, data_len, message",
    [
        ([[0, 16], [20, 36]], 36, r"'b.weight' begins at data offset 20, but tensor 'a.weight' ends at 16: 4 bytes"),
        ([[8, 24], [24, 40]], 40, r"'a.weight' begins at data offset 8, but the data starts at 0"),
        ([[0, 16], [16, 32]], 35, r"3 bytes after tensor 'b.weight' \(data offset 32\) belong to no tensor"),
        ([[0, 16], [12, 28]], 28, r"'a.weight' and 'b.weight' overlap"),
    ],
)
def test_layout_errors_name_the_file_and_tensor(tmp_path, offsets, data_len, message):
    header = {n: {"dtype": "F32", "shape": [4], "data_offsets": o} for n, o in zip(("a.weight", "b.weight"), offsets, strict=True)}
    path = tmp_path / "w.safetensors"
    _file(path, header, data_len)
    assert not _reference_accepts(path)
    with pytest.raises(DataError, match=message):
        open_checkpoint(path)


def test_zero_size_tensors_and_disk_order(tmp_path):
    # Tensors stored in another order than the header lists them, and an empty tensor at a
    # boundary, are a valid file: the values read equal the reference's.
    a = np.arange(8, dtype="<f4").reshape(2, 4)
    b = -np.arange(4, dtype="<f4").reshape(1, 4)
    header = {"a.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [16, 48]},
              "e.weight": {"dtype": "F32", "shape": [0, 4], "data_offsets": [16, 16]},
              "b.weight": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}
    head = json.dumps(header).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b.tobytes() + a.tobytes())
    from safetensors.numpy import load_file

    ref = load_file(str(path))
    by_name = open_checkpoint(path).by_name
    assert np.array_equal(read_tensor(by_name["a.weight"]), ref["a.weight"])
    assert np.array_equal(read_tensor(by_name["b.weight"]), ref["b.weight"])


@pytest.mark.parametrize(
    "dtype, count, nbytes",
    [("F4", 4, 2), ("F4", 3, 2), ("F4", 4, 4), ("F6_E2M3", 4, 3), ("F8_E8M0", 4, 4), ("F8_E8M0", 4, 8), ("C64", 1, 8)],
)
def test_dtypes_uscl_cannot_decode_are_sized_as_the_reference_sizes_them(tmp_path, dtype, count, nbytes):
    path = tmp_path / "w.safetensors"
    _file(path, {"w": {"dtype": dtype, "shape": [count], "data_offsets": [0, nbytes]}}, nbytes)
    assert _uscl_accepts(path) == _reference_accepts(path)
