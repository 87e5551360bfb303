"""Writes that fail under a file size limit (``ulimit -f``: EFBIG, as a full disk would give
ENOSPC) and writers racing on one output: one error line, the old file whole, no temporary
file left behind."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file size limits")


def _uscl_limited(args: list[str], cwd: Path, limit_bytes: int) -> subprocess.CompletedProcess:
    """``python -m gmse_cli ARGS`` with files capped at ``limit_bytes`` (Python ignores SIGXFSZ,
    so a write past the cap fails with EFBIG)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    env = dict(os.environ, PYTHONPATH=str(conftest.REPO_ROOT), USCL_CACHE_DIR=str(cwd / "cache"),
               PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "gmse_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, preexec_fn=cap)


@pytest.mark.parametrize("suffix", [".pdf", ".png", ".svg"])
def test_a_plot_past_the_file_size_limit_is_one_error_line(tmp_path, suffix):
    # A PDF (a 40 KB plot) under `ulimit -f 2`: matplotlib's PDF writer met EFBIG, then failed
    # again closing its zlib stream, and `uscl rank --plot r.pdf` printed a zlib.error
    # traceback and exited 1.
    plot = tmp_path / f"r{suffix}"
    plot.write_bytes(b"old plot")
    res = _uscl_limited(["rank", "int4", "nf4", "--plot", plot.name], tmp_path, 2048)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write plot '{plot.name}'"), res.stderr
    assert plot.read_bytes() == b"old plot"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [plot.name]


@pytest.mark.parametrize("name", ["b" * 250 + ".json", "é" * 125 + ".toml", "c" * 241 + ".toml"])
def test_a_name_as_long_as_a_file_name_can_be_is_written(tmp_path, name):
    # 242-255 bytes: the temporary '.NAME.XXXXXXXX.tmp' was past 255 bytes, so `formats export
    # -o` (or `fit --out`, after its work) failed with 'file name too long' on a name the
    # file system takes.
    from gmse_cli.atomic import write_atomic

    assert len(os.fsencode(name)) <= 255
    write_atomic(tmp_path / name, b"new")
    assert (tmp_path / name).read_bytes() == b"new"

    def fails(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / name, fails)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"new"


def test_a_255_byte_output_name_from_the_command_line(tmp_path):
    name = "d" * 250 + ".json"
    res = _uscl_limited(["formats", "export", "w4a16", "--to", "compressed-tensors", "-o", name], tmp_path, 1 << 30)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / name).read_text())["quant_method"] == "compressed-tensors"


def _deep_folder(root: Path, length: int) -> Path:
    folder = root
    while len(os.fsencode(str(folder))) + 201 < length:
        folder = folder / ("x" * 200)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize("total", [4070, 4085, 4095])
def test_a_path_near_path_max_is_refused_by_the_check_or_written(tmp_path, total):
    # A path of 4,082-4,095 bytes (PATH_MAX is 4,096 with its NUL) passed the output check, whose
    # probe file had a short name, and then its temporary file's path, 14 bytes longer, was
    # refused: `fit --out PATH` failed with 'file name too long' after its work.
    from gmse_cli.atomic import check_output_path, write_atomic

    folder = _deep_folder(tmp_path, 4060)
    path = folder / ("f" * (total - len(os.fsencode(str(folder))) - 1 - 5) + ".json")
    assert len(os.fsencode(str(path))) == total
    try:
        check_output_path(path, what="file", error=ValueError)
    except ValueError as exc:
        assert "file name too long" in str(exc) and total + 14 >= 4096
    else:
        write_atomic(path, b"{}")
        assert path.read_bytes() == b"{}"
    assert [p.name for p in folder.iterdir() if p.is_file()] == ([path.name] if total + 14 < 4096 else [])


def test_a_codebook_cache_on_a_full_disk_is_one_line_naming_the_file(private_codebook_cache, run_cli, monkeypatch):
    # A codebook trained with USCL_CACHE_DIR on a full disk: 'error: a write failed: no space
    # left on device', naming no file (np.save's OSError carries none). Since then a cache that
    # cannot be written costs the cache, not the answer: one note (tests/test_portable_cache.py).
    import errno

    import numpy as np

    from gmse_cli.compress.vq import gaussian, store

    def full(path, data, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def trained(dim, index_bits, **kwargs):  # seconds of training left out: only the save matters here
        info = store.CodebookInfo(kind="gaussian", dim=dim, index_bits=index_bits, codewords=2**index_bits,
                                  scale_constant=1.0, mse=1.0, mse_samples=1)
        return np.ones((2**index_bits, dim), np.float32), info

    monkeypatch.setattr(store, "write_atomic", full)
    monkeypatch.setattr(gaussian, "train_gaussian_codebook", trained)
    res = run_cli("gmse", "vq16-b0.0625")
    assert res.code == 0, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: cannot write codebook cache '"), res.stderr
    assert "gaussian-d16-b1-" in lines[0] and "no space left on device" in lines[0]
