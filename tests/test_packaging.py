"""Packaging: importing uscl changes nothing process-wide, and each dependency is declared where
the code that uses it lives."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import os, sys
before = dict(os.environ)
import gmse_cli, gmse_cli.cli, gmse_cli.compress, gmse_cli.gmse, gmse_cli.law, gmse_cli.rank
import gmse_cli.fit, gmse_cli.realmse, gmse_cli.search, gmse_cli.figures
assert dict(os.environ) == before, "import changed the environment"
import numpy as np
from gmse_cli.compress import compress
from gmse_cli.gmse import gmse_of
x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
compress(gmse_cli.resolve_format("int4"), x)
gmse_of("nf4", rel_err=3e-2, row_length=256)
import numba
assert numba.threading_layer()  # uscl started numba's pool
assert dict(os.environ) == before, "running uscl changed the environment"
print("unchanged", os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_importing_and_running_leave_the_environment_alone(policy):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy  # a user's own choice stays theirs
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["unchanged", str(policy)]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}


def test_dependencies_where_they_are_used():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = _names(project["dependencies"])
    train = _names(project["optional-dependencies"]["train"])
    # the core (everything but the training backend) imports safetensors nowhere; training does
    package = ROOT / "gmse_cli"
    core_files = [p for p in package.rglob("*.py") if "training" not in p.relative_to(package).parts]
    assert not any("safetensors" in _imports(p) for p in core_files)
    assert any("safetensors" in _imports(p) for p in (package / "training").rglob("*.py"))
    assert "safetensors" not in core and "safetensors" in train
    # plots place their labels with adjustText
    assert "adjusttext" in core and any("adjustText" in _imports(p) for p in core_files)
    # the extra names a range, not one build: CI pins its CPU wheel in its own install command
    torch = [r for r in project["optional-dependencies"]["train"] if r.startswith("torch")]
    assert torch and "==" not in torch[0] and ">=" in torch[0]


def test_every_file_a_shipped_sweep_names_is_package_data():
    """The paper sweep names format files beside it (paper-formats/*.toml); the wheel shipped
    only train/*.toml, so an installed uscl could not read its own paper-c4.toml
    ("cannot read format file paper-formats/sparse-20-layer.toml")."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folder = ROOT / project["package-dir"]["gmse_cli.sweeps"]
    globs = project["package-data"]["gmse_cli.sweeps"]
    shipped = {p.relative_to(folder) for g in globs for p in folder.glob(g)}
    named = set()
    for sweep in folder.glob("*.toml"):
        for scheme in tomllib.loads(sweep.read_text(encoding="utf-8")).get("schemes", []):
            for value in (scheme.get("weights"), scheme.get("activations")):
                if isinstance(value, str) and value.endswith(".toml"):
                    named.add((sweep.parent / value).resolve().relative_to(folder.resolve()))
    assert any(p.parts[0] == "paper-formats" for p in named)  # the case this guards
    assert named <= shipped, sorted(map(str, named - shipped))


def test_every_shipped_codebook_is_package_data():
    """The VQ codebooks uscl reads without training them are package data: each file in their
    folder matches a glob of the wheel's (else an installed uscl trains them again, minutes)."""
    from gmse_cli.compress.vq.store import shipped_dir

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    package = ROOT / "gmse_cli" / "compress" / "vq"
    globs = project["package-data"]["gmse_cli.compress.vq"]
    matched = {p for g in globs for p in package.glob(g)}
    files = set(shipped_dir().iterdir())
    assert len(files) >= 36  # 18 codebooks, each an .npy and its .json
    assert files <= matched, sorted(p.name for p in files - matched)
