"""uscl fit's runs reader took a results record's schema_version 2.0, "1", 0 or true as if it
were 1, where uscl train's reader of the same file (training.results.load_records) and a law
file refuse each in one line: one refusal for one field, whichever command reads the record."""

from __future__ import annotations

import json

import pytest

RECORD = {"run_key": "0" * 16, "status": "ok", "weights": "int4", "N": 1e6, "D": 1e7, "val_loss": 3.0}


@pytest.mark.parametrize(("value", "shown"), [(2.0, "2.0"), (3.0, "3.0"), ("1", "'1'"), (0, "0"), (True, "true")])
def test_fit_refuses_a_record_schema_version_train_refuses(tmp_path, run_cli, value, shown):
    from gmse_cli.errors import DataError
    from gmse_cli.training.results import load_records

    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(RECORD | {"schema_version": value}) + "\n")
    with pytest.raises(DataError) as train_side:
        load_records(path)
    result = run_cli("fit", str(path), "--model", "dense")
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{path}:1: the run record has schema_version {shown}, " in result.stderr
    # the same words after the place, as train's reader gives
    assert str(train_side.value).split(": the run record ", 1)[1] in result.stderr


def test_fit_still_reads_a_record_of_schema_version_1_or_none(tmp_path):
    from gmse_cli.runs.train_jsonl import load_train_jsonl

    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(RECORD | {"schema_version": 1}) + "\n" + json.dumps(RECORD | {"N": 2e6}) + "\n")
    assert [r.N for r in load_train_jsonl(path)] == [1e6, 2e6]
