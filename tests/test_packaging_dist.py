"""The source distribution as a distributor meets it: built from the checkout, it carries every file
the repository tracks (the tests' shared modules, the examples and benchmarks they run, the license
text the declared license requires), and its tests collect when unpacked with no ../shared/data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import conftest
import pytest

ROOT = conftest.REPO_ROOT
_PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# repository plumbing that is no part of the source a distributor builds or tests
_NOT_SHIPPED = {".gitignore", ".ci/run"}


def test_the_declared_license_ships_its_text():
    """pyproject.toml says Apache-2.0, whose section 4(a) asks that redistributions carry the
    license; the repository had no LICENSE, so neither the sdist nor the wheel carried one."""
    assert _PROJECT["license"] == "Apache-2.0"
    assert _PROJECT.get("license-files") == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist is checked by the test below, from the checkout)")
    # tracked files only: an untracked scratch file (or a shared/ data folder in the checkout) is
    # no part of the source, and listing it failed the comparison below
    listed = subprocess.run(["git", "ls-files", "--cached", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    return sorted(p for p in listed.split("\0") if p and (ROOT / p).is_file())


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tuple[Path, list[str]]:
    """An sdist built by setuptools' PEP 517 hook from a copy of the checkout's files (not in
    place: the build writes an egg-info folder), and the list of files it copied."""
    files = _tracked()
    pytest.importorskip("setuptools", minversion="77")  # pyproject.toml's build requirement (SPDX license)
    tree = tmp_path_factory.mktemp("tree") / "uscl"
    for name in files:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("dist")
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return out / done.stdout.split()[-1], files


def test_the_sdist_carries_every_tracked_file(sdist):
    """setuptools put the packages, README and tests/test*.py in the sdist but not tests/conftest.py
    and the tests' other shared modules, nor examples/ and benchmarks/: `pytest` on an unpacked
    sdist stopped with 44 collection errors (ModuleNotFoundError: conftest)."""
    archive, files = sdist
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = sorted(set(files) - names - _NOT_SHIPPED)
    assert missing == []
    assert {"LICENSE", "tests/conftest.py", "examples/cpu-law.jsonl", "formats/nvfp4.toml"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".nbi", ".nbc"))]


def test_the_unpacked_sdist_collects_its_tests_without_shared_data(sdist, tmp_path):
    """With no ../shared/data beside it, tests that need the data skip; test_fitmodels_checked.py
    read quest_runs.json while collecting and stopped the whole run (FileNotFoundError)."""
    archive, _ = sdist
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    (top,) = tmp_path.iterdir()
    assert not (tmp_path / "shared").exists()
    env = {**os.environ, "PYTHONPATH": str(top), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "tests"], cwd=top, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]


def test_one_version_and_python_floor():
    """The version is written twice (pyproject.toml for the metadata pip installs, gmse_cli's
    __version__ for `uscl --version` and every --json output): they must agree, and the lowest
    Python the classifiers name is requires-python's floor."""
    import gmse_cli

    assert _PROJECT["version"] == gmse_cli.__version__
    floor = _PROJECT["requires-python"].removeprefix(">=")
    named = [c.rsplit("::", 1)[1].strip() for c in _PROJECT["classifiers"]
             if c.startswith("Programming Language :: Python :: 3.")]
    assert min(named, key=lambda v: tuple(map(int, v.split(".")))) == floor
