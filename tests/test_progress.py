"""Progress and messages (gmse_cli.progress) and the floor plan they serve: the library
reports through the ground floor, never through the CLI."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gmse_cli import progress

PACKAGE = Path(__file__).resolve().parents[1] / "gmse_cli"


def test_a_disabled_bar_says_nothing(capsys):
    with progress.task("GMSE", 3, enabled=False) as bar:
        assert not bar.enabled
        bar.update(detail="int4", completed=1, total=3, loss="1.0")
        bar.advance(2, detail="fp4")
        bar.log("not shown")
    with progress.status("fitting", enabled=False):
        pass
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_bars_and_notes_go_to_stderr_only(capsys):
    with progress.task("measuring", 10, count="percent", columns=("loss {loss}",)) as bar:
        assert bar.enabled
        bar.update(completed=5, detail="layer.0[1]", loss="2.5")
        bar.log("held-out [loss] 2.4")
        bar.advance(5)
    progress.note("a format named lut[-1,0,1] was skipped")
    progress.info("wrote [bold]x")
    captured = capsys.readouterr()
    assert captured.out == ""
    # Text is printed as given: brackets are not taken for rich markup.
    assert "held-out [loss] 2.4" in captured.err
    assert "note: a format named lut[-1,0,1] was skipped" in captured.err
    assert "wrote [bold]x" in captured.err


@pytest.mark.parametrize("no_color", [False, True])
def test_the_console_respects_no_color(no_color):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    env.update(FORCE_COLOR="1", TERM="xterm-256color", PYTHONPATH=str(PACKAGE.parent))
    if no_color:
        env["NO_COLOR"] = "1"
    script = "from gmse_cli.progress import note; note('colour test')"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "colour test" in res.stderr
    assert ("\x1b[" in res.stderr) is not no_color  # a forced terminal is coloured unless NO_COLOR


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_library_never_imports_the_cli():
    entry_points = {PACKAGE / "__main__.py", PACKAGE / "training" / "__main__.py"}
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if PACKAGE / "cli" not in path.parents and path not in entry_points
        and any(name == "gmse_cli.cli" or name.startswith("gmse_cli.cli.") for name in _imports(path))
    ]
    assert offenders == []


def test_the_gmse_engine_does_not_import_the_training_extra():
    # The torch backend registers itself from gmse_cli.training (see gmse_cli.gmse.backends).
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in (PACKAGE / "gmse").rglob("*.py")
        if any(name.startswith(("gmse_cli.training", "torch")) for name in _imports(path))
    ]
    assert offenders == []
