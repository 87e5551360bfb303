"""The example scripts the README names: a bad argument is one line, never a traceback; the modes
it cites run."""

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


def test_fit_coverage_dense_counts_the_profile_intervals():
    """The README's dense-law coverage figures come from this mode: it runs and counts alpha's and
    E's profile intervals over every dataset (3 here, the README's 100 per seed block)."""
    done = subprocess.run([sys.executable, str(REPO / "examples" / "fit_coverage.py"), "--dense", "--reps", "3",
                           "--bootstrap", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2] for line in done.stdout.splitlines()[1:]}
    assert set(rows) == {"alpha profile", "E profile"}, done.stdout
    assert all(v.endswith("/3") and 0 <= int(v.split("/")[0]) <= 3 for v in rows.values()), done.stdout
