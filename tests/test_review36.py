"""review36: names with rich-markup brackets print as written; a SIGTERM that follows a SIGINT
under `train --launcher torchrun` still reaches torchrun."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures)
import pytest

REPO = Path(__file__).resolve().parents[1]


def _dense_runs_csv(path: Path, scheme: str) -> Path:
    # 12 runs of a Chinchilla-like law (the fit is beside the point), named `scheme`
    rows = ["N,D,loss,weights,scheme"]
    for n in (1e7, 3e7, 1e8, 3e8):
        for tpp in (20, 50, 100):
            loss = 1.7 + 400 / n**0.34 + 410 / (n * tpp) ** 0.28
            rows.append(f'{n:g},{n * tpp:g},{loss:.6f},bf16,"{scheme}"')
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("scheme", ["run[/bold]", "run[red]x", "[/]"])
def test_a_scheme_name_with_markup_brackets_prints_as_written(tmp_path, run_cli, scheme):
    # Before: '[/bold]' in a runs file's scheme name ended `uscl fit` with rich's MarkupError
    # traceback (exit 1); '[red]' recoloured the cell and was dropped from it.
    result = run_cli("fit", str(_dense_runs_csv(tmp_path / "runs.csv", scheme)), "--model", "dense")
    assert result.code == 0, result.stderr
    assert f"│ {scheme} " in result.stdout


def test_table_cells_are_text_as_written_and_a_text_cell_keeps_its_style():
    from rich.console import Console
    from rich.text import Text

    from gmse_cli.cli.table import Table

    table = Table()
    table.add_column("a")
    table.add_column("b")
    table.add_row("x[/b]\x1b[2J", Text("y", style="yellow"))
    out = io.StringIO()
    Console(file=out, width=60, force_terminal=True, color_system="standard").print(table)
    text = out.getvalue()
    assert "x[/b]\\x1b[2J" in text  # the escape character shown, the brackets kept
    assert "\x1b[33my" in text  # yellow: a styled cell is styled, not escaped


_AGENT = """
import pathlib, signal, sys, time
def stop(signum, frame):
    time.sleep(0.3)  # workers stopping
    pathlib.Path(sys.argv[1]).write_text("terminated")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a slow machine's late SIGINT changes nothing
print("ready", flush=True)
time.sleep(60)
"""

_LAUNCHER = """
import sys
from gmse_cli.training.launch import call_passing_interrupts
try:
    call_passing_interrupts([sys.executable, "-c", sys.argv[1], sys.argv[2]])
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_while_waiting_out_a_sigint_still_reaches_torchrun(tmp_path):
    # A supervisor's SIGINT, then its SIGTERM within torchrun's grace period (3 s). Before: the
    # SIGTERM handler was gone by then, so uscl died at once and torchrun (and its workers)
    # never heard of it and trained on.
    marker = tmp_path / "terminated"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _AGENT, str(marker)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert launcher.stdout.readline() == "ready\n"
        os.kill(launcher.pid, signal.SIGINT)  # the launcher alone
        time.sleep(0.5)  # inside the grace period: the launcher waits for the agent
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(timeout=30) == -signal.SIGTERM
        assert marker.read_text() == "terminated"  # the agent got SIGTERM before the launcher died
    finally:
        launcher.stdout.close()
        with contextlib.suppress(ProcessLookupError):  # the agent, if it was left behind
            os.killpg(launcher.pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.wait()
