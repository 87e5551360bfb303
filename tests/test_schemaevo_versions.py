"""Files from other uscl versions: a results record from a newer uscl is refused in one line
that says to upgrade; records as older versions wrote them keep reading."""

from __future__ import annotations

import json

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)
import pytest
from conftest import law_file_text

from gmse_cli.errors import DataError
from gmse_cli.runs import load_train_jsonl
from gmse_cli.training.results import load_records

# The fields of a uscl train record the fitter reads, as every uscl so far wrote them
# (examples/cpu-law.jsonl, unchanged since it was first committed).
_RECORD = {"schema_version": 1, "run_key": "f693e0de9db453ae", "name": "tiny-100k/w:int3/a:int3/tpp8/s0",
           "status": "ok", "weights": "int3", "activations": "int3", "params": 106816, "tokens": 854016,
           "tokens_per_param": 8.0, "val_loss": 3.8511596920007345, "seed": 0, "uscl_version": "0.1.0"}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_fit_refuses_a_record_of_a_newer_schema_in_one_line(tmp_path, run_cli):
    runs = _write(tmp_path / "runs.jsonl", [_RECORD, {**_RECORD, "schema_version": 99, "run_key": "0" * 16}])
    result = run_cli("fit", str(runs), "--no-heldout")
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{runs}:2" in lines[0] and "schema_version 99" in lines[0] and "upgrade uscl" in lines[0]


def test_records_of_the_current_schema_and_other_tools_records_still_read(tmp_path):
    runs = load_train_jsonl(_write(tmp_path / "runs.jsonl", [_RECORD]))
    assert [(r.weights, r.N, r.D, r.loss) for r in runs] == [("int3", 106816.0, 854016.0, 3.8511596920007345)]
    # another training tool's own schema_version is not uscl's: no run_key, no uscl_version
    other = {"schema_version": 7, "weights": "int4", "N": 1e6, "D": 2e7, "loss": 3.5}
    assert [r.loss for r in load_train_jsonl(_write(tmp_path / "other.jsonl", [other]))] == [3.5]


@pytest.mark.parametrize("version", [2, 99])
def test_train_resume_refuses_a_newer_results_file_saying_what_to_do(tmp_path, version):
    results = _write(tmp_path / "results.jsonl", [{**_RECORD, "schema_version": version}])
    with pytest.raises(DataError, match=rf"results.jsonl:1: .*schema_version {version}, written by a newer uscl.*upgrade"):
        load_records(results)




def test_a_law_from_a_newer_uscl_with_a_key_this_one_lacks_says_upgrade(tmp_path, run_cli):
    from gmse_cli.law import load_law

    old = tmp_path / "old.toml"
    old.write_text(law_file_text("0.1.0"))
    assert load_law(old).E.value == 2.7180759251046074
    newer = tmp_path / "newer.toml"
    newer.write_text(law_file_text("9.0.0") + '\n[families.rotation.L]\nvalue = 1.0\nprovenance = "x"\n')
    result = run_cli("rank", "--law", str(newer))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "written by uscl 9.0.0" in result.stderr and "upgrade uscl" in result.stderr
    # the same unknown key in a law of this uscl's version is a misspelling, as before
    same = tmp_path / "same.toml"
    same.write_text(law_file_text("0.1.0") + "\n[extra]\nx = 1\n")
    result = run_cli("rank", "--law", str(same))
    assert result.code == 2 and "check its spelling" in result.stderr
