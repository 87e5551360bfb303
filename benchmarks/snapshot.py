"""A snapshot of the package for benchmarks that time whole processes.

The processes run on a copy made at start, so edits to the working tree during a run (which
invalidate numba's cache) cannot skew a comparison.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snapshot_package(into: Path, *, byte_compile: bool = False) -> Path:
    """Copy gmse_cli and the catalog into ``into`` (a source checkout: PYTHONPATH=into);
    ``byte_compile``: write the .pyc files too, as `pip install` leaves them."""
    for name in ("gmse_cli", "formats"):
        shutil.copytree(REPO / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", into / "pyproject.toml")  # marks a source checkout
    if byte_compile:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "gmse_cli")], check=True)
    return into


def snapshot_commit(ref: str, into: Path) -> Path:
    """The package and catalog as committed at ``ref`` (a baseline to time against), laid out
    and byte-compiled as :func:`snapshot_package` lays out the working tree."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "gmse_cli", "formats", "pyproject.toml"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "gmse_cli")], check=True)
    return into
