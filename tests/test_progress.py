"""Progress and messages (gmse_cli.progress): the library reports through the ground floor,
never through the CLI (tests/test_house.py checks the imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gmse_cli import progress

REPO = Path(__file__).resolve().parents[1]


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
    env.update(FORCE_COLOR="1", TERM="xterm-256color", PYTHONPATH=str(REPO))
    if no_color:
        env["NO_COLOR"] = "1"
    script = "from gmse_cli.progress import note; note('colour test')"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "colour test" in res.stderr
    assert ("\x1b[" in res.stderr) is not no_color  # a forced terminal is coloured unless NO_COLOR
