"""A message on stderr stays one line in a log: rich broke messages at 80 columns when stderr
was not a terminal, a written file's path included ('wrote plot /tmp/.../a_very_long_na' then
'me.png' on the next line), which no one can paste back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_long_stderr_message_is_one_line_in_a_pipe(tmp_path):
    folder = tmp_path / ("a-folder-whose-name-alone-is-longer-than-a-terminal-" + "x" * 40)
    folder.mkdir()
    plot = folder / "rank-plot-with-a-long-name.png"
    env = dict(os.environ, PYTHONPATH=str(REPO), USCL_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("COLUMNS", None)
    done = subprocess.run([sys.executable, "-m", "gmse_cli", "rank", "int4", "nvfp4", "--plot", str(plot)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert plot.is_file()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert any(str(plot) in line for line in lines), done.stderr
    assert all(len(line) <= 80 or str(plot) in line for line in lines)
