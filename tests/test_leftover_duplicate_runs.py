"""`uscl fit` fits an exact duplicate run once (a record pasted twice, a file given twice).

Before: the copies counted as independent runs: n_runs included them, they weighed double in
the fit and the bootstrap intervals narrowed. The expected fit here is the fit of the same file
without the copies (written by this test), and the note names the first copy's line.
"""

from __future__ import annotations

import json
import math

import pytest

from gmse_cli.runs import drop_duplicates, load_runs

SIZES = (2e6, 5e6, 1e7, 3e7)
TPP = (5, 10, 20, 40)


def _rows() -> list[str]:
    """Chinchilla-form losses with a fixed wiggle (no fit is exact): 16 distinct runs."""
    rows = []
    for i, n in enumerate(SIZES):
        for j, t in enumerate(TPP):
            d = n * t
            loss = 400 * n ** -0.34 + 1800 * d ** -0.28 + 1.8 + 0.004 * math.sin(3 * i + 5 * j)
            rows.append(f"{n:g},{d:g},{loss!r},bf16")
    return rows


HEADER = "N,D,loss,weights"


def _fit(run_cli, *paths) -> tuple[dict, str]:
    result = run_cli("fit", *map(str, paths), "--model", "dense", "--bootstrap", "40", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["results"][0], result.stderr


def _same_fit(a: dict, b: dict) -> None:
    """Equal but for what names the files read (and the count of copies dropped)."""
    def fit_of(result: dict) -> dict:
        rest = {k: v for k, v in result.items() if k not in ("data_files", "duplicates_dropped")}
        rest["fitted_range"] = {k: v for k, v in rest["fitted_range"].items() if k != "provenance"}
        return rest

    assert fit_of(a) == fit_of(b)


@pytest.fixture
def files(tmp_path):
    rows = _rows()
    unique = tmp_path / "unique.csv"
    unique.write_text("\n".join([HEADER, *rows]) + "\n")
    # rows 3 and 7 (file lines 4 and 8) pasted again after line 10, and row 3 once more at the end
    dup_rows = [*rows[:9], rows[2], rows[6], *rows[9:], rows[2]]
    dups = tmp_path / "runs.csv"
    dups.write_text("\n".join([HEADER, *dup_rows]) + "\n")
    return unique, dups


def test_duplicates_are_fitted_once(run_cli, files):
    unique, dups = files
    expected, quiet = _fit(run_cli, unique)
    got, err = _fit(run_cli, dups)
    assert got["n_runs"] == 16 == expected["n_runs"]
    assert got["duplicates_dropped"] == 3 and expected["duplicates_dropped"] == 0
    _same_fit(got, expected)
    notes = [line for line in err.splitlines() if "duplicate" in line]
    assert len(notes) == 1 and "duplicate" not in quiet
    assert notes[0].startswith("note: 3 exact duplicate runs fitted once")
    assert f"{dups}:11" in notes[0] and f"{dups}:4" in notes[0]  # the first copy, and what it repeats


def test_a_file_given_twice_is_fitted_once(run_cli, files):
    unique, _ = files
    expected, _ = _fit(run_cli, unique)
    got, err = _fit(run_cli, unique, unique)
    assert got["duplicates_dropped"] == 16
    _same_fit(got, expected)
    assert f"{unique} is given more than once" in err


def test_runs_that_differ_in_any_field_are_kept(tmp_path):
    path = tmp_path / "r.csv"
    row = _rows()[0]
    path.write_text("\n".join([f"{HEADER},seed", f"{row},0", f"{row},1", f"{row},0"]) + "\n")
    kept, copies = drop_duplicates(load_runs(path))
    assert len(kept) == 2 and [(c.location, o.location) for c, o in copies] == [(f"{path}:4", f"{path}:2")]
