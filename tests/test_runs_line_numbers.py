"""A bad D or loss in a runs file is named with its line, as a bad N already was: the error
said "run 'int4' (runs.csv): D = -1.0 ...", which names neither the line nor the cell's row."""

from __future__ import annotations

import pytest

from gmse_cli.errors import DataError
from gmse_cli.runs import load_runs

GOOD = "1e7,1e8,3.1,int4\n"


@pytest.mark.parametrize(("cells", "message"), [
    ("2e7,-1,3.0,int4", "runs.csv:3: D = -1.0 must be a count of at least 1"),
    ("2e7,0,3.0,int4", "runs.csv:3: D = 0.0 must be a count of at least 1"),
    ("2e7,1e8,nan,int4", "runs.csv:3: loss = nan must be a positive finite number"),
    ("2e7,1e8,-3,int4", "runs.csv:3: loss = -3.0 must be a positive finite number"),
    ("2e7,inf,3.0,int4", "runs.csv:3: D = inf must be a count of at least 1"),
])
def test_csv_names_the_line(tmp_path, cells, message):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights\n" + GOOD + cells + "\n")
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        load_runs(path)


@pytest.mark.parametrize(("record", "message"), [
    ('{"N": 1e7, "D": -5, "loss": 3.1, "weights": "int4"}', "runs.jsonl:2: D = -5.0 must be a count of at least 1"),
    ('{"N": 0, "D": 1e8, "loss": 3.1, "weights": "int4"}', "runs.jsonl:2: N = 0.0 must be a count of at least 1"),
    ('{"N": 1e7, "D": 1e8, "loss": 0, "weights": "int4"}', "runs.jsonl:2: loss = 0.0 must be a positive finite"),
])
def test_json_lines_name_the_line(tmp_path, record, message):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e7, "D": 1e8, "loss": 3.1, "weights": "int4"}\n' + record + "\n")
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        load_runs(path)
