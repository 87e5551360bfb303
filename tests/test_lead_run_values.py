"""Runs whose numbers no training run can have, and JSON objects that name a key twice.

Python's JSON parser keeps the last of two values for one key, so
``{"loss": 3.1, "loss": 3.0}`` fitted 3.0 without a word; a parameter count of 0.5 and a loss
of 1e308 nats were fitted too. Each is now refused in one line naming the file's line.
"""

from __future__ import annotations

import json

import conftest  # noqa: F401  (the shared fixtures)
import pytest

from gmse_cli.errors import DataError
from gmse_cli.inputs import RepeatedKeyError, strict_json
from gmse_cli.runs import load_runs

GOOD = '{"N": 1e7, "D": 1e8, "loss": 3.1, "weights": "int4"}\n'


def test_strict_json_reads_what_json_reads_and_refuses_a_repeated_key():
    text = '{"a": [1, {"b": 2.5}], "c": null}'
    assert strict_json(text) == json.loads(text)
    for doubled in ('{"a": 1, "a": 1}', '[{"x": {"k": 1, "k": 2}}]'):
        with pytest.raises(RepeatedKeyError):
            strict_json(doubled)


@pytest.mark.parametrize("record", [
    '{"N": 1e7, "D": 1e8, "loss": 3.1, "loss": 3.0, "weights": "int4"}',
    '{"N": 1e7, "D": 1e8, "loss": 3.1, "weights": "int4", "weights": "int8"}',
])
def test_a_json_lines_record_naming_a_key_twice_is_refused(tmp_path, record):
    path = tmp_path / "runs.jsonl"
    path.write_text(GOOD + record + "\n")
    with pytest.raises(DataError, match=r"runs\.jsonl:2: the key '(loss|weights)' appears twice"):
        load_runs(path)


def test_a_json_list_record_naming_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text("[" + GOOD + ', {"N": 2e7, "N": 3e7, "D": 1e8, "loss": 3.0, "weights": "int4"}]')
    with pytest.raises(DataError, match=r"runs\.json: the key 'N' appears twice"):
        load_runs(path)


@pytest.mark.parametrize(("record", "message"), [
    ('{"N": 0.5, "D": 1e8, "loss": 3.1, "weights": "int4"}', "N = 0.5 must be a count of at least 1"),
    ('{"N": 1e7, "D": 0.25, "loss": 3.1, "weights": "int4"}', "D = 0.25 must be a count of at least 1"),
    ('{"N": 1e7, "D": 1e8, "loss": 1e308, "weights": "int4"}', "loss = 1e+308 is over 100 nats per token"),
    ('{"N": 1e7, "D": 1e8, "loss": 100.5, "weights": "int4"}', "loss = 100.5 is over 100 nats per token"),
])
def test_numbers_no_run_can_have_are_refused_naming_the_line(tmp_path, record, message):
    path = tmp_path / "runs.jsonl"
    path.write_text(GOOD + record + "\n")
    with pytest.raises(DataError, match="runs.jsonl:2: " + message.replace(".", r"\.").replace("+", r"\+")):
        load_runs(path)


def test_edge_values_still_load(tmp_path):
    # one parameter, one token and a loss of exactly 100 nats are possible, if odd
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights\n1,1,100,int4\n1e7,1e8,3.1,int4\n")
    runs = load_runs(path)
    assert [(r.N, r.D, r.loss) for r in runs] == [(1.0, 1.0, 100.0), (1e7, 1e8, 3.1)]


def test_the_cli_says_one_line_and_exits_2(tmp_path, run_cli):
    path = tmp_path / "runs.jsonl"
    path.write_text(GOOD * 3 + '{"N": 1e7, "D": 1e8, "loss": 3.1, "loss": 2.9, "weights": "int4"}\n')
    result = run_cli("fit", str(path), "--model", "dense")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "runs.jsonl:4: the key 'loss' appears twice" in result.stderr


def test_a_results_file_line_naming_a_key_twice_is_refused(tmp_path):
    from gmse_cli.training.results import load_records

    path = tmp_path / "results.jsonl"
    path.write_text('{"run_key": "a", "run_key": "b"}\n')
    with pytest.raises(DataError, match=r"results\.jsonl:1: the key 'run_key' appears twice"):
        load_records(path)
