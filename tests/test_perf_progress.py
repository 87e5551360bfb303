"""Slow steps are never silent (task `perf`): a `--plot` says it is drawing on a terminal, and a
first fit on a machine says its kernels compile, as the GMSE kernels do.

Both run whole processes: the drawing status on a real pseudo-terminal (rich shows a live
status only on an interactive one), the compile notice on a pipe with a fresh numba cache.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_TERMINAL", "TTY_INTERACTIVE", "COLUMNS")}
    env.update(PYTHONPATH=str(REPO), TERM="xterm-256color", USCL_CACHE_DIR=str(tmp_path / "uscl"), **extra)
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_rank_plot_shows_a_drawing_status_on_a_terminal(tmp_path):
    out = tmp_path / "rank.png"
    master, slave = pty.openpty()
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the slave closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "gmse_cli", "rank", "int4", "nvfp4", "--plot", str(out)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                              env=_env(tmp_path), timeout=300)
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    text = bytes(seen).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert out.is_file()
    assert "drawing plot /" in text  # the path, cut to the terminal's width
    assert "wrote plot" in text


def test_a_piped_plot_gets_no_drawing_line(tmp_path):
    out = tmp_path / "rank.png"
    proc = subprocess.run([sys.executable, "-m", "gmse_cli", "rank", "int4", "--plot", str(out)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"wrote plot {out}"]


def test_a_first_fit_says_its_kernels_compile(tmp_path):
    # Fresh numba cache: the law objective's and L-BFGS's kernels compile in this process.
    script = """
import numpy as np
from gmse_cli.progress import enable_notices
from gmse_cli.fit.objective import LossObjective
from gmse_cli.fit.optimize import batched_lbfgs

class NoCurve:
    names = ()

enable_notices(True)
rng = np.random.default_rng(0)
logN, logD = rng.uniform(15, 20, 12), rng.uniform(18, 22, 12)
obj = LossObjective(logN, logD, np.log(2 + rng.uniform(0, 1, 12)), NoCurve(), 1e-3)
theta = np.array([[1.0, 0.3, 1.0, 0.3, 0.5]])
f, g = obj.value_grad(theta)
assert np.all(np.isfinite(f)) and np.all(np.isfinite(g))
x, f, iters, ok = batched_lbfgs(lambda t, rows: ((t * t).sum(axis=1), 2 * t), np.ones((2, 3)))
assert ok.all() and np.abs(x).max() < 1e-3
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=_env(tmp_path, NUMBA_CACHE_DIR=str(tmp_path / "numba")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    # one line however many kernels compile (a pipe gets no bar)
    assert proc.stderr.splitlines() == ["compiling numba kernels (once per machine) ..."]
