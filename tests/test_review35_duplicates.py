"""Exact duplicate runs whose recorded numbers are only spelled apart (``0`` and ``0.0``) are one
run; ints a float cannot hold exactly are never merged with their float neighbour."""

from __future__ import annotations

import json

from gmse_cli.runs import drop_duplicates, load_runs


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


BASE = {"N": 2e6, "D": 1e7, "loss": 3.5, "weights": "bf16"}


def test_a_whole_number_and_its_float_are_the_same_record(tmp_path):
    path = _write(tmp_path / "r.jsonl", [{**BASE, "seed": 0, "steps": 100},
                                         {**BASE, "seed": 0.0, "steps": 100.0}])
    kept, copies = drop_duplicates(load_runs(path))
    assert len(kept) == 1 and [(c.location, o.location) for c, o in copies] == [(f"{path}:2", f"{path}:1")]


def test_a_csv_and_a_json_lines_copy_of_one_run_are_one(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("N,D,loss,weights,seed\n2e6,1e7,3.5,bf16,7\n")
    jsonl = _write(tmp_path / "r.jsonl", [{**BASE, "seed": 7}])
    kept, copies = drop_duplicates(load_runs([csv, jsonl]))
    assert len(kept) == 1 and len(copies) == 1


def test_seeds_a_float_cannot_tell_apart_stay_apart(tmp_path):
    # 2**60 and 2**60 + 1 are one float64, but two seeds
    path = _write(tmp_path / "r.jsonl", [{**BASE, "seed": 2**60}, {**BASE, "seed": 2**60 + 1},
                                         {**BASE, "seed": True}, {**BASE, "seed": 1}])
    kept, copies = drop_duplicates(load_runs(path))
    assert len(kept) == 4 and copies == []


def test_a_file_given_twice_is_named_not_called_a_copy_of_itself(run_cli, tmp_path):
    path = tmp_path / "runs.csv"
    rows = [f"{n:g},{n * t:g},{400 * n ** -0.34 + 1800 * (n * t) ** -0.28 + 1.8 + 0.003 * ((i * 7 + t) % 5)!r},bf16"
            for i, n in enumerate((2e6, 5e6, 1e7, 3e7)) for t in (5, 10, 20, 40)]
    path.write_text("\n".join(["N,D,loss,weights", *rows]) + "\n")
    result = run_cli("fit", str(path), str(path), "--model", "dense", "--json")
    assert result.code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "duplicate" in line]
    assert notes == [f"note: 16 exact duplicate runs fitted once ({path} is given more than once)"]
