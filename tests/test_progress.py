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


# --------------------------------------------------------------------------------------------
# Work done once per machine: a kernel compiled, a codebook trained
# --------------------------------------------------------------------------------------------

_COMPILES = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numba
from gmse_cli import progress
progress.enable_notices({enabled})
progress.watch_compiles()

@numba.njit  # not cached: compiled in this process
def first(x):
    return x + 1

@numba.njit
def second(x):
    return first(x) * 2

assert second(1) == 4 and second(2.5) == 7.0  # three compilations, nested and not
print("done")
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_compilations_are_announced_once_on_a_pipe(enabled, tmp_path):
    script = tmp_path / "compiles.py"
    script.write_text(_COMPILES.format(enabled=enabled))
    res = subprocess.run([sys.executable, str(script), str(Path(__file__).resolve().parents[1])],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "done\n"
    expected = "compiling numba kernels (once per machine) ...\n" if enabled else ""
    assert res.stderr == expected


def test_once_on_a_terminal_is_a_moving_row_even_inside_a_bar(monkeypatch):
    import io
    import time

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, color_system=None)
    monkeypatch.setattr(progress, "stderr_console", lambda: console)
    # pytest's stderr is no terminal, and a notice already said in this process (a kernel that an
    # earlier test compiled, with a fresh cache) is not repeated: a terminal and a fresh process
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(progress, "_said", set())
    with progress.once("training the codebook"):
        pass
    assert buffer.getvalue() == ""  # notices are the command line's to turn on
    def refreshed_with(text: str) -> None:
        # a refresh or two of the pulsing bar; on a loaded machine the refresh thread may be
        # late, so wait for the row to be drawn (at most 10 s) rather than a fixed time
        deadline = time.monotonic() + 10.0
        while text not in buffer.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)

    progress.enable_notices(True)
    try:
        with progress.once("training the codebook"):
            refreshed_with("training the codebook")
        with progress.task("GMSE", 3) as bar:  # one live display: the notice joins it as a row
            with progress.once("compiling numba kernels"):
                refreshed_with("compiling numba kernels")
            bar.advance()
    finally:
        progress.enable_notices(False)
    text = buffer.getvalue()
    assert "training the codebook (once per machine)" in text
    assert "compiling numba kernels (once per machine)" in text and "GMSE" in text
