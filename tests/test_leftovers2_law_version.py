"""A law file's schema_version that is no integer (2.0, a TOML float) got pydantic's text
("schema_version: Input should be 1"); every bad value now gets one line naming it as written,
saying an integer is expected, with the upgrade hint for a number above the one uscl reads."""

from __future__ import annotations

import conftest
import pytest


@pytest.mark.parametrize(("value", "kind", "hint"), [
    ("2.0", "a float", True), ("2.5", "a float", True), ("1.0", "a float", False), ("nan", "a float", False),
    ("0", None, False), ("-1", None, False), ('"1"', "text", False), ("true", "a boolean", False),
    ("[1]", "no number", False),
])
def test_a_law_schema_version_that_is_no_integer_is_one_line_naming_it(tmp_path, run_cli, value, kind, hint):
    path = tmp_path / "odd.toml"
    path.write_text(conftest.law_file_text("0.1.0", head=f"schema_version = {value}\n"))
    result = run_cli("rank", "--law", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    shown = {'"1"': "'1'"}.get(value, value)
    assert f"{path}: the law file has schema_version {shown}, " in result.stderr
    assert "Input should be" not in result.stderr and "Value error" not in result.stderr
    assert (f"{kind} where an integer is expected" if kind else "which no uscl writes") in result.stderr
    assert ("pip install -U uscl" in result.stderr) == hint


def test_a_law_schema_version_of_1_or_none_still_reads(tmp_path):
    from gmse_cli.law import load_law

    for head in ("schema_version = 1\n", ""):
        path = tmp_path / "law.toml"
        path.write_text(conftest.law_file_text("0.1.0", head=head))
        assert load_law(path).schema_version == 1


@pytest.mark.parametrize(("value", "shown"), [(2.0, "2.0"), (0, "0"), ("1", "'1'"), (None, "null")])
def test_a_results_record_schema_version_that_is_no_integer_is_the_same_line(tmp_path, value, shown):
    import json

    from gmse_cli.errors import DataError
    from gmse_cli.training.results import load_records

    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"schema_version": value, "run_key": "0" * 16}) + "\n")
    with pytest.raises(DataError) as err:
        load_records(path)
    assert str(err.value).startswith(f"{path}:1: the run record has schema_version {shown}, ")
    assert "Input should be" not in str(err.value)
