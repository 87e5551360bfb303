"""uscl as a wheel installs it: the packages and package data pyproject.toml names, laid out as
setuptools' build_py lays them out (formats/ -> gmse_cli/catalog, train/ -> gmse_cli/sweeps), in a
folder with no pyproject.toml beside it, run from another working directory. No wheel is built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import conftest
import pytest

ROOT = conftest.REPO_ROOT
_SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
_BUILD_LEFTOVERS = {"__pycache__"}


def _source_dir(package: str) -> Path:
    mapped = _SETUPTOOLS.get("package-dir", {}).get(package)
    return ROOT / mapped if mapped else ROOT.joinpath(*package.split("."))


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    """A folder of modules that pyproject.toml does not list is left out of the wheel: its
    imports fail only in an installed uscl (the checkout's tests pass)."""
    listed = set(_SETUPTOOLS["packages"])
    found = set()
    for folder, subdirs, files in os.walk(ROOT / "gmse_cli"):
        subdirs[:] = [d for d in subdirs if d not in _BUILD_LEFTOVERS]
        here = Path(folder)
        if any(f.endswith(".py") for f in files):
            # a folder of modules without __init__.py would be a namespace package: not shipped either
            assert "__init__.py" in files, f"{here.relative_to(ROOT)} has modules but no __init__.py"
            found.add(".".join(here.relative_to(ROOT).parts))
    mapped = set(_SETUPTOOLS.get("package-dir", {}))
    assert found - listed == set(), sorted(found - listed)
    assert listed - found - mapped == set(), sorted(listed - found - mapped)
    for package in mapped:
        assert _source_dir(package).is_dir(), package


def test_every_data_file_in_the_package_folders_is_package_data():
    """Each file beside the modules that is not a module is read by uscl (a table, a law, the
    schema, a codebook, a catalog format): each must match a package-data glob of its package."""
    globs = _SETUPTOOLS["package-data"]
    missing = []
    for package in _SETUPTOOLS["packages"]:
        folder = _source_dir(package)
        shipped = {p for g in globs.get(package, ()) for p in folder.glob(g)}
        for path in folder.rglob("*"):
            rel = path.relative_to(folder)
            if not path.is_file() or path.suffix == ".py" or _BUILD_LEFTOVERS & set(rel.parts):
                continue
            if (folder / rel.parts[0]).is_dir() and (folder / rel.parts[0] / "__init__.py").is_file():
                continue  # a subpackage's own file: checked under that package
            if path not in shipped:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def _install_like_a_wheel(site: Path) -> None:
    globs = _SETUPTOOLS["package-data"]
    for package in _SETUPTOOLS["packages"]:
        source = _source_dir(package)
        target = site.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in source.glob("*.py"):
            shutil.copy2(module, target / module.name)
        for pattern in globs.get(package, ()):
            for path in source.glob(pattern):
                (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.relative_to(source))


_NO_TORCH = "import sys; sys.modules['torch'] = None\nfrom gmse_cli.cli import main\nmain(sys.argv[1:])\n"


def _uscl(args: list[str], *, site: Path, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "USCL_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    site = tmp_path_factory.mktemp("site-packages")
    _install_like_a_wheel(site)
    return site, tmp_path_factory.mktemp("elsewhere")


def test_an_installed_uscl_reads_its_own_data_as_a_checkout_does(installed, tmp_path):
    site, cwd = installed
    for args in (["formats", "--json"], ["gmse", "--all", "--json"], ["rank", "--law", "quest-c4", "--json"],
                 ["formats", "show", "nvfp4"], ["predict", "int4", "--json"], ["rank", "int4", "nf4", "--plot", "p.svg"]):
        wheel = _uscl(args, site=site, cwd=cwd, cache=tmp_path / "w")
        checkout = _uscl(args, site=ROOT, cwd=cwd, cache=tmp_path / "c")
        assert wheel.returncode == 0, wheel.stderr
        assert wheel.stdout == checkout.stdout, args
    assert (cwd / "p.svg").read_bytes().startswith(b"<?xml")
    listed = _uscl(["formats", "--json"], site=site, cwd=cwd, cache=tmp_path / "w").stdout
    assert len(json.loads(listed)["results"]) == len(list((ROOT / "formats").glob("*.toml")))


def test_an_installed_uscl_trains_its_shipped_sweeps_by_name(installed, tmp_path, shared_data):
    """The wheel ships train/*.toml as gmse_cli/sweeps, but nothing read them: outside a checkout
    `uscl train cpu-quick` said "sweep file cpu-quick does not exist" (and train/cpu-quick.toml
    the same), so an installed uscl could not run the README's sweep."""
    site, cwd = installed
    docs = shared_data / "python-docs-3.11.txt.xz"
    out = tmp_path / "runs.jsonl"
    for name in ("cpu-quick", "cpu-quick.toml"):
        done = _uscl(["train", name, "--dry-run", "--json", "--data", str(docs), "--out", str(out)],
                     site=site, cwd=cwd, cache=tmp_path / "w")
        assert done.returncode == 0, done.stderr
        plans = json.loads(done.stdout)["results"]
        # 3 presets x 2 token budgets x 4 weight formats, as the spec says (independently counted)
        spec = tomllib.loads((ROOT / "train" / "cpu-quick.toml").read_text(encoding="utf-8"))
        assert len(plans) == len(spec["presets"]) * len(spec["tokens_per_param"]) * len(spec["weights"]) == 24
    # the paper sweep names per-layer format files beside it: read from the installed copy
    done = _uscl(["train", "paper-c4", "--dry-run", "--json", "--out", str(out)], site=site, cwd=cwd,
                 cache=tmp_path / "w")
    assert done.returncode == 0, done.stderr
    unknown = _uscl(["train", "cpu-quik", "--dry-run"], site=site, cwd=cwd, cache=tmp_path / "w")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.count("\n") == 1 and "cpu-quik" in unknown.stderr and "cpu-quick" in unknown.stderr


def test_a_dry_run_without_torch_plans_instead_of_a_traceback(tmp_path):
    """A core install (no torch): `uscl train --preset tiny --dry-run` stopped in a traceback
    (ModuleNotFoundError: No module named 'torch', from plan_device), though the planner is
    written to run without torch ('no torch: no time estimate')."""
    done = _uscl(["train", "--preset", "tiny", "--format", "int4", "--dry-run", "--out", str(tmp_path / "r.jsonl")],
                 site=ROOT, cwd=tmp_path, cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "uscl[train]" in done.stderr
    assert "single" in done.stdout or "tiny" in done.stdout


def test_tokenizer_train_without_the_extra_is_one_line(tmp_path, shared_data):
    """Without `tokenizers`, `uscl tokenizer train` printed its progress line, then the error:
    two stderr lines where bad input (here a missing extra) gives one."""
    script = ("import sys; sys.modules['tokenizers'] = None\nfrom gmse_cli.cli import main\nmain(sys.argv[1:])\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "USCL_CACHE_DIR": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, "-c", script, "tokenizer", "train", str(shared_data / "python-docs-3.11.txt.xz"),
                           "--vocab-size", "512", "--out", str(tmp_path / "tok.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "uscl[train]" in done.stderr, done.stderr
    assert not (tmp_path / "tok.json").exists()
