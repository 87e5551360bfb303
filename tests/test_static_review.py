"""Faults found by a static-analysis pass (mypy, ruff's wider rule sets), and the ``python -O``
check that the error paths do not rest on ``assert``."""

from __future__ import annotations

import os
import subprocess
import sys

import conftest
import pytest

_HUGE_VQ = '[[stages]]\nkind = "vq"\ndim = 2\nbits = 1000000000000000000000000000000\ncodebook = "gaussian"\n'


def test_vq_too_many_codewords_names_bits_as_written(run_cli, tmp_path):
    # bits = 10^30 at dim 2: the message printed round(2e30) as 2000000000000000039769249677312,
    # digits nobody wrote, and named neither bits nor dim.
    path = tmp_path / "f.toml"
    path.write_text(_HUGE_VQ)
    result = run_cli("gmse", str(path))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "bits*dim = 1e+30*2" in lines[0]
    assert "39769249677312" not in lines[0]


@pytest.mark.parametrize("dim, bits, codewords", [(4, 5, "2^20"), (3, 7, "2^21"), (1, 17, "2^17")])
def test_vq_codewords_message_counts_them(run_cli, tmp_path, dim, bits, codewords):
    path = tmp_path / "f.toml"
    path.write_text(f'[[stages]]\nkind = "vq"\ndim = {dim}\nbits = {bits}\n')
    result = run_cli("gmse", str(path))
    assert result.code == 2
    assert f"bits*dim = {bits}*{dim} asks for {codewords} codewords" in result.stderr


@pytest.mark.parametrize("args", [
    ["gmse", "int99"],
    ["gmse", "5:4"],
    ["predict", "int4", "--params", "-1"],
    ["rank", "int4", "--level", "2"],
])
def test_bad_input_is_one_line_under_python_O(tmp_path, args):
    # python -O strips every assert: an input check that rested on one would pass bad values on.
    env = {**os.environ, "PYTHONPATH": str(conftest.REPO_ROOT), "USCL_CACHE_DIR": str(tmp_path),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-O", "-m", "gmse_cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "once per" not in line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
