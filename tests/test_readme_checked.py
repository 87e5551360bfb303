"""Scripts the README cites answer ``--help`` with their usage, as the README writes it, and no
traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bad_inputs_benchmark_help_shows_its_usage():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bad_inputs.py"), "--help"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    usage = " ".join(done.stdout.split())
    assert "usage: bad_inputs.py [-h] [N] [SEED]" in usage  # README: `python benchmarks/bad_inputs.py N SEED`
