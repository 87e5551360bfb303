"""A reader that closes uscl's output early (``uscl rank | head -1``) ends it as SIGPIPE ends a
Unix tool: exit 141 (128 + SIGPIPE), nothing on stderr, no traceback.

Before: exit 1 (Typer and rich each catch the BrokenPipeError and exit 1), which a shell with
``set -o pipefail`` reports as a failure of uscl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import PROGRESS_LINE, REPO_ROOT

PIPE_CODE = 128 + signal.SIGPIPE


def _closed_reader(args: list[str], cwd, tmp_path) -> tuple[int, bytes]:
    """Run ``uscl ARGS`` with its stdout a pipe whose read end is closed before uscl writes."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "USCL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("COLUMNS", None)
    # once through with stdout open, so that what is said once per machine (a first fit's
    # "compiling numba kernels" line) is said before the pipe test, not during it
    subprocess.run([sys.executable, "-m", "gmse_cli", *args], cwd=cwd, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    child = subprocess.Popen([sys.executable, "-m", "gmse_cli", *args], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone before the first byte (uscl takes 0.2 s to start)
    err = child.stderr.read()
    return child.wait(timeout=300), err


def _runs_csv(tmp_path):
    rows = [f"{n:g},{n * t:g},{400 * n ** -0.34 + 1800 * (n * t) ** -0.28 + 1.8 + 0.003 * ((i * 7 + t) % 5)!r},bf16"
            for i, n in enumerate((2e6, 5e6, 1e7, 3e7)) for t in (5, 10, 20, 40)]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(["N,D,loss,weights", *rows]) + "\n")
    return path


@pytest.mark.parametrize("args", [
    ["rank"],
    ["formats"],
    ["gmse", "int4", "nf4", "--json"],
    ["fit", "runs.csv", "--model", "dense", "--json"],
    ["--help"],
    ["rank", "--help"],
], ids=lambda a: " ".join(a))
def test_a_closed_pipe_is_a_silent_exit_141(tmp_path, args):
    _runs_csv(tmp_path)
    code, err = _closed_reader(args, tmp_path, tmp_path)
    # a bar's whole-line reports (a fit over 0.5 s) are progress, not a complaint about the pipe
    assert (code, PROGRESS_LINE.sub("", err.decode())) == (PIPE_CODE, "")


def test_an_open_pipe_is_untouched(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "USCL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "gmse_cli", "gmse", "int4", "--json"], env=env,
                          capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(b"{") and done.stderr == b""
