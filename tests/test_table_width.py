"""Tables drawn by rich (mse, search, fit, formats; gmse on a terminal) cut nothing at any
terminal width: at COLUMNS=80 `uscl mse` printed '0.011…' for an MSE of 0.011348, and names such
as 'had64+sint4-g…' even at 120. Text columns fold, numbers stay whole; a table that fits the
terminal that way stays within it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBERS = ["0.011348", "[0.01124, 0.01145]", "1,234,567", "3.216", "0.8193"]


def _table():
    from rich.table import Table

    table = Table(title="a title longer than the narrowest terminal tried here, which wraps", title_justify="left")
    for col in ("format", "MSE", "95% CI", "params", "eff. bits", "rho (GMSE)"):
        table.add_column(col, justify="left" if col == "format" else "right")
    table.add_row("had64+sint4-g64-sbf16", *NUMBERS)
    table.add_row("lut[-1,0,1]-rms1.224", "0.23387", "[0.2301, 0.2377]", "12", "1.048", "0.3362")
    return table


@pytest.mark.parametrize("width", [40, 60, 80, 120, 250])
def test_print_table_cuts_no_number_and_fits_where_it_can(monkeypatch, width):
    from rich.console import Console

    from gmse_cli.cli import console

    screen = Console(file=io.StringIO(), width=width)
    monkeypatch.setattr(console, "_out_console", lambda: screen)
    console.print_table(_table())
    text = screen.file.getvalue()
    assert "\u2026" not in text
    for number in NUMBERS:  # each number whole, on one line
        assert number in text, (number, text)
    # Narrowest layout: names folded to 12 characters, numbers whole. Content widths 12 + 8 + 18
    # + 9 + 5 + 6 = 58, plus 7 borders and 6 x 2 of padding: 77. Wider terminals hold it.
    # Below 77 the title wraps and the frame goes (a rule under the header, two spaces between
    # columns): the rows need 58 + 5 x 2 columns then, at most one more for rich's rounding.
    lines = text.splitlines()
    body = lines[next(k for k, line in enumerate(lines) if "format" in line):]
    widest = max(len(line) for line in body)
    assert widest <= (max(width, 69) if width < 77 else width)
    if width >= 77:
        assert all(len(line) <= width for line in lines)


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_column_with_a_min_width_keeps_its_names_whole(monkeypatch, width):
    """fit's constants folded to 'quantization.' over 'L' at 80 and 100 columns; a column whose
    names must read whole asks for its min_width, and another text column folds instead."""
    from rich.console import Console
    from rich.table import Table

    from gmse_cli.cli import console

    names = ["quantization.L", "quantization.F", "sparsity.C"]
    table = Table()
    table.add_column("constant", min_width=max(map(len, names)))
    for col in ("value", "profile 95%"):
        table.add_column(col, justify="right")
    table.add_column("source")
    for name in names:
        table.add_row(name, "0.41853", "[0.06151, 0.07324]", "held at law 'paper-llama-c4' " * 2)
    screen = Console(file=io.StringIO(), width=width)
    monkeypatch.setattr(console, "_out_console", lambda: screen)
    console.print_table(table)
    text = screen.file.getvalue()
    for name in names:
        assert name in text, (name, text)
    assert all(len(line) <= width for line in text.splitlines())


def test_mse_table_keeps_its_numbers_at_80_columns(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"layers.0.q.weight": rng.standard_normal((32, 256)).astype(np.float32)},
              str(tmp_path / "w.safetensors"))
    env = dict(os.environ, PYTHONPATH=str(REPO), USCL_CACHE_DIR=str(tmp_path / "cache"), COLUMNS="80")
    args = [sys.executable, "-m", "gmse_cli", "mse", str(tmp_path / "w.safetensors"), "-f", "int4", "-f",
            "lut[-1,0,1]-rms1.224", "--hadamard", "--hadamard-block", "64", "--sample", "0.5", "--worst", "0"]
    table = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    data = subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and data.returncode == 0, table.stderr + data.stderr
    assert "\u2026" not in table.stdout
    cells = re.findall(r"[^\s\u2502\u2503]+", table.stdout)
    for result in json.loads(data.stdout)["results"]:
        for value in (f"{result['mse']:.5g}", f"{result['gmse']:.5g}", f"{result['rho']:.4f}"):
            assert value in cells, (value, table.stdout)
