"""stderr's reader gone (a log collector that died) must not cost the data on stdout.

rich's handler of a broken pipe puts the null device over *stdout*, whichever stream broke, and
exits 1. Once a bar prints whole lines off a terminal from a thread of its own, its first line
after the reader went away silenced stdout and ended only that thread: ``uscl gmse ... --json >
out.json`` exited 0 with out.json empty. A note on the main thread lost stdout as well (exit 141,
as if stdout's reader had gone). Now stderr just goes quiet and the command carries on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

_BAR = """
import time
from gmse_cli import progress
progress.FIRST_LINE_S = 0.0
progress.LINE_EVERY_S = 0.02
with progress.task("work", 3) as bar:
    for _ in range(3):
        time.sleep(0.1)
        bar.advance()
print("the data")
"""

_NOTE = """
from gmse_cli import progress
progress.note("something worth knowing")
progress.info("and a line more")
print("the data")
"""


@pytest.mark.parametrize("code", [_BAR, _NOTE], ids=["bar-line-thread", "note"])
def test_stdout_survives_stderr_whose_reader_is_gone(tmp_path, code):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1", "TERM": "dumb"}
    out = tmp_path / "out.txt"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    with open(out, "wb") as stdout:
        child = subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=write_end, env=env,
                               timeout=120)
    os.close(write_end)
    assert (child.returncode, out.read_text()) == (0, "the data\n")
