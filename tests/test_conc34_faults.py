"""Writes that fail under a file size limit (``ulimit -f``: EFBIG, as a full disk would give
ENOSPC) and writers racing on one output: one error line, the old file whole, no temporary
file left behind."""

from __future__ import annotations

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
