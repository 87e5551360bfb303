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


def _help(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_positional_benchmarks_answer_help_with_the_readmes_usage():
    # README: `benchmarks/concurrency_faults.py [PROCESSES] [SEED]`, `benchmarks/rank_options.py N SEED`;
    # both read sys.argv as integers and answered --help with a ValueError traceback
    for script, usage in (("benchmarks/concurrency_faults.py", "[PROCESSES] [SEED]"),
                          ("benchmarks/rank_options.py", "N SEED")):
        done = _help(script, "--help")
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert usage in " ".join(done.stdout.split()), done.stdout


def test_composition_check_answers_help_and_refuses_an_unknown_mode():
    # every argument was a mode, and any mode but prod was fitted as harm: `--help` and a typo
    # each started minutes of fitting under their own label
    done = _help("examples/composition_check.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "[MODE ...]" in done.stdout
    done = _help("examples/composition_check.py", "prod", "harmm")
    assert done.returncode == 2
    assert "harmm" in done.stderr and "Traceback" not in done.stderr
