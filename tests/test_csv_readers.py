"""``--csv`` as pandas, Python's csv module and a spreadsheet read it.

Every cell read back by ``pd.read_csv`` equals the same command's ``--json`` value (full
precision, one vocabulary, empty for null), and a text cell a spreadsheet would run as a formula
(a format file named ``=HYPERLINK(...)``) starts with ``'``. Before: that name went out as it was,
and a spreadsheet opening ``uscl gmse ... --csv > gmse.csv`` ran it.
"""

from __future__ import annotations

import csv
import io
import json
import math

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)

NAME = '=HYPERLINK("http://example.com","a,b")'
FORMAT = f"""name = {json.dumps(NAME)}
description = "a line\\nand a second, with \\"quotes\\""

[[stages]]
kind = "quantize"
grid = "int"
bits = 4
scale = "rms"
scale_constant = 2.5139305786
group = "row"
scale_format = "fp32"
"""


def _flat(item: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in item.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def _spreadsheet_text(value: str) -> str:
    """What a careful CSV writer prints for a text value: a leading ' where a spreadsheet would
    start a formula, unless the text is a number."""
    if value[:1] in ("=", "+", "-", "@", "\t"):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def test_gmse_csv_reads_back_as_its_json_and_no_cell_is_a_formula(tmp_path, run_cli):
    import pandas as pd

    spec = tmp_path / "evil.toml"
    spec.write_text(FORMAT, encoding="utf-8")
    args = ("gmse", str(spec), "int4", "e2m1-g32-absmax-se8m0")
    as_json = run_cli(*args, "--json")
    as_csv = run_cli(*args, "--csv")
    assert as_json.code == 0 and as_csv.code == 0, (as_json.stderr, as_csv.stderr)
    rows = [_flat(r) for r in json.loads(as_json.stdout)["results"]]
    text = as_csv.stdout

    records = list(csv.reader(io.StringIO(text, newline="")))
    assert records[0] == list(dict.fromkeys(k for r in rows for k in r))  # one header, JSON's keys
    assert len(records) == len(rows) + 1
    assert "\x1b" not in text and "\r" not in text
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    for i, row in enumerate(rows):
        for key, value in row.items():
            cell = frame[key].iloc[i]
            if value is None:
                assert isinstance(cell, float) and math.isnan(cell), (key, cell)
            elif isinstance(value, str):
                assert cell == _spreadsheet_text(value) == records[i + 1][records[0].index(key)], (key, cell)
            else:  # bools and numbers: the same value, not a rounded one
                assert cell == value, (key, cell, value)
    assert frame["name"].iloc[0] == "'" + NAME
    assert not any(c[:1] in "=+-@" for record in records for c in record if c and not _number(c))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_csv_marks_formula_text_but_not_numbers(capsys):
    from gmse_cli.cli.output import print_csv

    capsys.readouterr()
    print_csv([{"name": "-x", "v": -1.5, "s": "-2.5e-3", "t": "@sum", "u": "+1+1", "w": "a=b", "e": ""}],
              command="rank")
    header, row = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header == ["name", "v", "s", "t", "u", "w", "e"]
    assert row == ["'-x", "-1.5", "-2.5e-3", "'@sum", "'+1+1", "a=b", ""]
