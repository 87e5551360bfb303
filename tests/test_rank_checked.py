"""Regression tests from an independent check of rank/predict: damaged GMSE cache entries.

A cached GMSE whose file was edited or left by another version must not change what rank and
predict print. The reference is the same format computed fresh on the same seed (Monte Carlo
on a seeded, counter-based bank is bit-reproducible), so every test compares a corrupted
cache's answer with the fresh one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gmse_cli import gmse_of
from gmse_cli.gmse import cache

# Outside the shipped table, Monte Carlo, and precise enough at rel-err 1e-3 (512 rows of 4096)
# that its interval's degrees of freedom come from its stored sample count, not the minimum.
FORMAT = "sparse30+int4"


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "gmse_cache_dir", lambda: tmp_path)  # a cache of this test's own
    est = gmse_of(FORMAT, rel_err=1e-3, cache="use")
    assert est.method == "monte-carlo"
    (entry,) = tmp_path.glob("*.json")
    return est, entry


def _edit(entry: Path, **fields) -> None:
    data = json.loads(entry.read_text())
    data.update(fields)
    entry.write_text(json.dumps(data))


def _same_numbers(a, b) -> None:
    assert (a.gmse, a.ci_low, a.ci_high, a.std_err) == (b.gmse, b.ci_low, b.ci_high, b.std_err)


def test_the_cache_serves_an_intact_entry(fresh):
    est, _ = fresh
    again = gmse_of(FORMAT, rel_err=1e-3, cache="use")
    assert again.method == "cache"
    assert again.gmse == est.gmse and again.std_err == est.std_err


@pytest.mark.parametrize("samples", [-3, 0])
def test_a_monte_carlo_entry_without_samples_is_recomputed(fresh, samples):
    # A negative or zero sample count served as it was: the interval then took the minimum
    # degrees of freedom (gmse_low of sparse30+int4 moved by 3e-5 of itself, lm3-g128 by 1.7e-4).
    est, entry = fresh
    _edit(entry, samples=samples)
    again = gmse_of(FORMAT, rel_err=1e-3, cache="use")
    assert again.method == "monte-carlo"
    _same_numbers(again, est)


@pytest.mark.parametrize("field", ["algorithms", "row_length"])
def test_an_entry_recorded_for_other_compressors_or_rows_is_not_served(fresh, field):
    # The key stands for the row length and the compressors' algorithm versions; a file whose
    # own record says otherwise was computed for something else (another version's file, an edit).
    est, entry = fresh
    data = json.loads(entry.read_text())
    changed = {k: v + 1 for k, v in data["algorithms"].items()} if field == "algorithms" else 1024
    _edit(entry, **{field: changed})
    again = gmse_of(FORMAT, rel_err=1e-3, cache="use")
    assert again.method == "monte-carlo"
    _same_numbers(again, est)


@pytest.mark.parametrize("command", [["rank", "int4"], ["predict", "int4"]])
@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_law_name_is_refused(run_cli, command, name):
    # An empty --law silently ranked with the shipped default law (exit 0), where an empty
    # --act is refused: a blank name is no law.
    result = run_cli(*command, "--law", name, "--draws", "50")
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "law" in result.stderr


def test_load_law_of_an_empty_name_raises():
    from gmse_cli.errors import LawError
    from gmse_cli.law import load_law

    with pytest.raises(LawError, match="no law file or shipped law named ''"):
        load_law("")


def _closed_form(result_json: str) -> tuple[float, float]:
    """(rho, loss) of a one-stage quantization prediction, from the shipped law file read by
    tomllib and the stage's GMSE: rho = L tanh(F log_{1/4} GMSE)^C, A (N rho)^-alpha + B D^-beta + E."""
    import math
    import tomllib

    from gmse_cli.paths import laws_dir

    law = tomllib.loads((laws_dir() / "paper-llama-c4.toml").read_text())
    (row,) = json.loads(result_json)["results"]
    (stage,) = row["stages"]
    q = law["families"]["quantization"]
    rho = q["L"]["value"] * math.tanh(q["F"]["value"] * -math.log(stage["gmse"]) / math.log(4)) ** q["C"]["value"]
    n, d = row["params"], row["tokens"]
    loss = law["A"]["value"] * (n * rho) ** -law["alpha"]["value"] + law["B"]["value"] * d ** -law["beta"]["value"]
    return rho, loss + law["E"]["value"]


def _law_entry(folder: Path) -> Path:
    (entry,) = [p for p in (folder / "toml").glob("*.json") if b'"paper-llama-c4"' in p.read_bytes()]
    return entry


def _with_payload(entry: Path, edit) -> None:
    # Keep whatever header line the entry has; replace its JSON payload by edit(payload).
    raw = entry.read_bytes()
    header, newline, payload = raw.rpartition(b"\n") if b"\n" in raw else (b"", b"", raw)
    entry.write_bytes(header + newline + json.dumps(edit(json.loads(payload))).encode())


@pytest.mark.parametrize("edit", [
    lambda law: {**law, "A": {**law["A"], "value": 2 * law["A"]["value"]}},  # valid, other values
    lambda law: {},  # valid JSON, no law
    lambda law: {k: v for k, v in law.items() if k != "draws"},  # the joint draws dropped
])
def test_a_damaged_law_cache_entry_is_parsed_again(run_cli, tmp_path, monkeypatch, edit):
    # The shipped law's parse is kept as JSON in the cache. An entry holding valid JSON of other
    # values was served: A doubled gave predict int4 a loss of 4.083 instead of 2.762; an empty
    # object failed with an error blaming the shipped law file.
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    args = ("predict", "int4", "--json", "--draws", "100")
    first = run_cli(*args)
    assert first.code == 0
    _with_payload(_law_entry(tmp_path), edit)
    again = run_cli(*args)
    assert again.code == 0, again.stderr
    assert again.stdout == first.stdout
    rho, loss = _closed_form(again.stdout)
    (row,) = json.loads(again.stdout)["results"]
    assert row["rho"] == pytest.approx(rho, rel=1e-12)
    assert row["predicted_loss"] == pytest.approx(loss, rel=1e-12)
