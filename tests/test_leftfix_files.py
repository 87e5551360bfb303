"""Corners of the files uscl reads and the scripts beside it, left by earlier reviews.

Before: a law written by a development or pre-release uscl (``uscl_version = "0.2.dev0"``,
"0.2rc1") read as no version at all, so a key it added was called a misspelling; law files
carried no ``schema_version``, so a newer layout could not be refused as other files are; and
benchmarks/compile_time.py called the private ``bank._row_sq_errors``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)
import pytest
from conftest import law_file_text

from gmse_cli import __version__
from gmse_cli.errors import LawError
from gmse_cli.schema.versions import newer_writer

REPO = Path(__file__).resolve().parents[1]


# --- a version a dev, pre or post release writes is still a version ------------------------------

@pytest.mark.parametrize("theirs", ["0.2.dev0", "0.2rc1", "0.2.0a1", "0.1.1.dev3", "1.0", "0.1.1.post2",
                                    "0.1.0", "0.1", "0.1.0.dev0", "0.1.0rc2", "0.0.9", "0.1.0+local.7"])
def test_a_writers_version_is_newer_exactly_where_its_release_is(theirs):
    version = pytest.importorskip("packaging.version")
    # the rule: newer where the release segment (PEP 440's N.N.N, as packaging reads it) is,
    # trailing zeros aside; a dev, pre, post or local version of this release is not newer
    ours = tuple(version.Version(__version__).release)
    mine = tuple(version.Version(theirs).release)
    width = max(len(ours), len(mine))
    newer = mine + (0,) * (width - len(mine)) > ours + (0,) * (width - len(ours))
    assert (newer_writer(theirs) is not None) == newer, theirs
    if newer:
        assert f"written by uscl {theirs}" in newer_writer(theirs)


@pytest.mark.parametrize("theirs", ["unknown", "", "dev", 3, None])
def test_what_is_no_version_gives_no_hint(theirs):
    assert newer_writer(theirs) is None


def test_a_version_of_5000_digits_is_one_error_line_not_a_traceback(tmp_path, run_cli):
    # int() of more than 4,300 digits raised ValueError out of the law reader
    path = tmp_path / "long.toml"
    path.write_text(law_file_text("9" * 5000) + "\n[extra]\nx = 1\n")
    result = run_cli("rank", "--law", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1 and "upgrade uscl" in result.stderr




def test_a_law_from_a_dev_release_with_a_new_key_says_upgrade(tmp_path, run_cli):
    path = tmp_path / "dev.toml"
    path.write_text(law_file_text("0.2.dev0") + '\n[families.rotation.L]\nvalue = 1.0\nprovenance = "x"\n')
    result = run_cli("rank", "--law", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "written by uscl 0.2.dev0" in result.stderr and "upgrade uscl" in result.stderr
    assert "spelling" not in result.stderr


# --- law files carry a schema version --------------------------------------------------------

def test_a_law_file_without_schema_version_reads_as_version_1(tmp_path):
    from gmse_cli.law import load_law

    path = tmp_path / "old.toml"
    path.write_text(law_file_text("0.1.0"))
    law = load_law(path)
    assert law.schema_version == 1 and law.E.value == 2.7180759251046074


def test_a_written_law_file_says_its_schema_version_first(tmp_path):
    import tomllib

    from gmse_cli.law import load_law, save_law

    old = tmp_path / "old.toml"
    old.write_text(law_file_text("0.1.0"))
    out = tmp_path / "out.toml"
    save_law(load_law(old), out)
    text = out.read_text()
    assert text.splitlines()[0] == "schema_version = 1"
    assert tomllib.loads(text)["schema_version"] == 1
    assert load_law(out) == load_law(old)


def test_the_shipped_laws_say_their_schema_version():
    import tomllib

    from gmse_cli.paths import laws_dir

    shipped = sorted(laws_dir().glob("*.toml"))
    assert shipped
    for path in shipped:
        assert tomllib.loads(path.read_text(encoding="utf-8"))["schema_version"] == 1, path.name


@pytest.mark.parametrize("version", [2, 99])
def test_a_law_of_a_newer_schema_is_refused_with_the_hint_other_files_give(tmp_path, run_cli, version):
    from gmse_cli.law import load_law
    from gmse_cli.schema.versions import newer_schema

    path = tmp_path / "newer.toml"
    path.write_text(law_file_text("9.0.0", head=f"schema_version = {version}\n")
                    + '\n[families.rotation.L]\nvalue = 1.0\nprovenance = "x"\n')
    hint = newer_schema(version, 1, "X").removeprefix("X")  # the words every newer file gets
    assert "upgrade uscl (pip install -U uscl)" in hint
    with pytest.raises(LawError) as err:
        load_law(path)
    assert str(err.value) == f"{path}: the law file{hint}"
    result = run_cli("rank", "--law", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert f"schema_version {version}, written by a newer uscl" in result.stderr


@pytest.mark.parametrize("value", ["0", '"1"', "true"])
def test_a_law_schema_version_that_is_no_version_is_one_error(tmp_path, run_cli, value):
    path = tmp_path / "odd.toml"
    path.write_text(law_file_text("0.1.0", head=f"schema_version = {value}\n"))
    result = run_cli("rank", "--law", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1 and "schema_version" in result.stderr


# --- the scripts beside the package use its public names ---------------------------------------

def _code_of(path: Path) -> list[ast.Module]:
    """The script's own code and every string in it that is Python importing gmse_cli (a
    snippet a benchmark runs in a child process)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = [tree]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "gmse_cli" in node.value:
            try:
                out.append(ast.parse(node.value))
            except SyntaxError:
                continue
    return out


def _borrowed(module: ast.Module) -> list[str]:
    aliases, found = set(), []
    for node in ast.walk(module):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmse_cli"):
            for alias in node.names:
                if (alias.name.startswith("_") and not alias.name.startswith("__")) or any(p.startswith("_") and not p.startswith("__")
                                                     for p in node.module.split(".")):
                    found.append(f"from {node.module} import {alias.name}")
                aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("gmse_cli"))
    for node in ast.walk(module):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_benchmarks_and_examples_use_no_private_name_of_the_package():
    scripts = sorted([*REPO.glob("benchmarks/*.py"), *REPO.glob("examples/*.py")])
    assert any(p.name == "compile_time.py" for p in scripts)
    borrowed = {f"{p.relative_to(REPO)}: {name}" for p in scripts for m in _code_of(p) for name in _borrowed(m)}
    assert borrowed == set()
