"""Tables fit the terminal (COLUMNS) from 60 columns up, and never cut a number: before, `uscl
rank` printed 112-column lines at COLUMNS=80 (and 60), `gmse --vs` 118, `predict --act` a
261-column warning, and rich tables (mse, search, fit) ran 4-40 columns past 80. Text columns
fold, then the least needed columns go (named on stderr); every number left equals --json's."""

from __future__ import annotations

import json
import re

import conftest  # noqa: F401  (the run_cli fixture)
import numpy as np
import pytest

WIDTHS = [60, 80, 100, 120]
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def _numbers(item, scale=1.0):
    """Every number in a JSON result (nested too), and each divided by ``scale``."""
    out = []
    if isinstance(item, dict):
        item = list(item.values())
    if isinstance(item, list):
        for value in item:
            out += _numbers(value, scale)
    elif isinstance(item, int | float) and not isinstance(item, bool):
        out += [float(item), float(item) / scale]
    return out


def _equals_some(token: str, values) -> bool:
    """``token`` is one of ``values`` rounded to the significant digits it shows."""
    digits = len(token.lstrip("+-").replace(".", "").split("e")[0].lstrip("0")) or 1
    shown = float(token)
    return any(abs(float(f"{v:.{digits}g}") - shown) <= 1e-12 * max(1.0, abs(shown)) for v in values)


def _check_numbers(line: str, values) -> None:
    for token in NUMBER.findall(line.replace(",", "")):
        assert _equals_some(token, values), (token, line)


@pytest.mark.parametrize("width", WIDTHS)
def test_rank_fits_and_keeps_its_numbers(run_cli, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    table, data = run_cli("rank", "--act", "int8"), run_cli("rank", "--act", "int8", "--json")
    assert table.code == 0 and data.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    results = json.loads(data.stdout)["results"]
    seen = 0
    for r in results:
        name = r["name"].removeprefix("W:").removesuffix(" A:int8")
        row = [line for line in lines if re.match(rf"^[*!]*\s+{re.escape(name)}\s", line)]
        if len(name) > 12 or not row:  # a folded name: its numbers still sit on its first line
            continue
        seen += 1
        values = [v for k, v in r.items() if isinstance(v, float)]
        values += [r["memory_to_match_bytes"] / 1e6]  # "99.9 MB"
        _check_numbers(row[0].split(name, 1)[1].replace("MB", ""), values)
    assert seen > 20
    if width <= 80:  # the table, names folded, is 100 wide: what went is named on stderr
        assert "note: left out 'method'" in table.stderr


@pytest.mark.parametrize("width", [60, 80])
def test_predict_and_gmse_fit(run_cli, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    pred = run_cli("predict", "int4", "--act", "int8")
    gmse, data = run_cli("gmse", "int4", "nvfp4", "2:4+int4", "--vs", "nvfp4"), run_cli(
        "gmse", "int4", "nvfp4", "2:4+int4", "--vs", "nvfp4", "--json")
    for out in (pred, gmse):
        assert out.code == 0, out.stderr
        assert all(len(line) <= width for line in out.stdout.splitlines()), out.stdout
    assert "activations quantized without a rotation" in " ".join(pred.stdout.split())  # wrapped, whole
    results = json.loads(data.stdout)["results"]
    for r in results:
        row = next(line for line in gmse.stdout.splitlines() if line.startswith(r["name"] + " "))
        _check_numbers(row[len(r["name"]):], _numbers(r))


@pytest.mark.parametrize("width", [60, 80])
def test_rich_mse_table_fits_and_keeps_its_numbers(run_cli, monkeypatch, tmp_path, width):
    from rich.console import Console
    from safetensors.numpy import save_file

    from gmse_cli.cli import console

    rng = np.random.default_rng(0)
    save_file({"layers.0.q.weight": rng.standard_normal((32, 256)).astype(np.float32)},
              str(tmp_path / "w.safetensors"))
    monkeypatch.setattr(console, "_out_console", lambda: Console(width=width, no_color=True))
    args = ["mse", str(tmp_path / "w.safetensors"), "-f", "int4", "-f", "lut[-1,0,1]-rms1.224", "--hadamard",
            "--hadamard-block", "64", "--sample", "0.5", "--worst", "1"]
    table, data = run_cli(*args), run_cli(*args, "--json")
    assert table.code == 0 and data.code == 0, table.stderr
    assert all(len(line) <= width for line in table.stdout.splitlines()), table.stdout
    assert "\u2026" not in table.stdout
    for r in json.loads(data.stdout)["results"]:
        if len(r["name"]) > 12:
            continue
        row = next(line for line in table.stdout.splitlines() if line.startswith(r["name"] + " "))
        _check_numbers(row[len(r["name"]):].replace("x", " "), _numbers(r))


def test_text_table_folds_text_then_drops_optional_columns_never_numbers():
    from gmse_cli.cli.texttable import TextTable

    table = TextTable("a title that is long enough to be wrapped at sixty columns or so, at spaces",
                      optional=["method", "GMSE"])
    for header, just in (("format", "left"), ("GMSE", "right"), ("rho [95%]", "right"), ("method", "left")):
        table.add_column(header, just)
    table.add_row("had128+2:4x2+int4-allstats", "0.0123456", "0.502 [0.438, 0.566]", "monte-carlo")
    lines = [text for text, _ in table.lines(width=50)]
    assert table.left_out == ["method"]
    assert all(len(line) <= 50 for line in lines), lines
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("\u2500")) + 1:]
    assert len(rows) > 1 and "0.0123456" in rows[0] and "0.502 [0.438, 0.566]" in rows[0]
    assert rows[0].split()[0] + "".join(line.strip() for line in rows[1:]) == "had128+2:4x2+int4-allstats"
    assert [text for text, _ in table.lines(width=None)][-1].endswith("monte-carlo")  # a pipe: whole lines


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "", " ", "99999999", "\u0667"])
def test_garbage_columns_is_ignored_or_taken_whole(run_cli, monkeypatch, raw):
    from gmse_cli.cli.texttable import output_width

    monkeypatch.setenv("COLUMNS", raw)
    assert output_width() == (99999999 if raw == "99999999" else None)  # captured stdout: no terminal
    out = run_cli("rank")
    assert out.code == 0 and "Traceback" not in out.stderr
