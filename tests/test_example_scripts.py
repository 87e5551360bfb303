"""The example scripts the README names fail on a bad argument with one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_law_variants_check_names_the_valid_variants_for_an_unknown_one():
    pytest.importorskip("torch")
    # `gammaD` is the README table's label; the script's variant is `prod-gammaD`.
    done = subprocess.run([sys.executable, str(REPO / "examples" / "law_variants_check.py"), "gammaD"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: unknown variant gammaD; choose from prod, ")
    assert "prod-gammaD" in line.split("choose from", 1)[1].split(", ")
