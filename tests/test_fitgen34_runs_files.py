"""Runs files generated from a known law, written the unusual ways real files are written.

The losses come from the law written here, A (N rho)^-alpha + B D^-beta + E with
rho = tanh(F log_{1/4} GMSE)^C; the capacities asserted are that formula's, never a fit's output.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from gmse_cli import fit as F
from gmse_cli.gmse import gmse_of
from gmse_cli.runs import Run, load_runs

TRUTH = {"A": 400.0, "alpha": 0.3, "B": 2000.0, "beta": 0.35, "E": 1.7, "F": 0.41, "C": 1.39}
SMALL_GRID = np.array([(a, al, b, be, e) for al, be, e, a, b in
                       itertools.product([0.2, 0.5], [0.2, 0.5], [0.0, 1.0], [4.0, 8.0], [4.0, 8.0])])
SIZES, TPP = (1e7, 4e7, 1.6e8), (10.0, 40.0, 160.0)


def _rho(fmt: str) -> float:
    bits = -math.log(gmse_of(fmt).gmse) / math.log(4.0)
    return math.tanh(TRUTH["F"] * bits) ** TRUTH["C"]


def _loss(N: float, D: float, rho: float) -> float:
    return TRUTH["A"] * (N * rho) ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"] + TRUTH["E"]


def _rows(formats: dict[str, str]) -> list[dict]:
    """{spelling: format whose capacity it has} -> one record per (spelling, N, D/N)."""
    return [{"weights": spelling, "N": N, "D": N * t, "loss": _loss(N, N * t, _rho(fmt))}
            for spelling, fmt in formats.items() for N in SIZES for t in TPP]


def test_one_format_under_two_spellings_is_one_scheme(tmp_path):
    """fp4 written as fp4, e2m1 and FP4 (one format: same stages) is one scheme: one decoupled
    capacity over all its runs, equal to the generator's tanh-curve capacity of fp4."""
    rows = _rows({"bf16": "bf16", "int8": "int8", "fp4": "fp4", "e2m1": "fp4", "FP4": "fp4", "int2": "int2"})
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights\n" + "".join(f"{r['N']!r},{r['D']!r},{r['loss']!r},{r['weights']}\n" for r in rows))
    res = F.fit(load_runs(path), model="decoupled", starts=SMALL_GRID, profile=False)
    caps = {c.scheme: c for c in res.capacities}
    assert set(caps) == {"bf16", "int8", "fp4", "int2"}
    assert caps["fp4"].n_runs == 27
    # noiseless runs: the free capacity is the generator's, relative to bf16's
    assert caps["fp4"].rho == pytest.approx(_rho("fp4") / _rho("bf16"), rel=1e-5)
    assert any("'e2m1'" in n and "'FP4'" in n for n in res.notes)


def test_a_held_out_scheme_leaves_out_its_other_spellings():
    """Leaving out fp4 must leave out its runs written e2m1 too, or the held-out refit sees the
    format it is said to predict."""
    rows = _rows({"bf16": "bf16", "int8": "int8", "int4": "int4", "fp4": "fp4", "e2m1": "fp4", "int2": "int2"})
    runs = [Run(scheme=r["weights"], weights=r["weights"], N=r["N"], D=r["D"], loss=r["loss"]) for r in rows]
    res = F.fit(runs, model="unified", starts=SMALL_GRID, profile=False)
    entries = {e.name: e for e in res.heldout_schemes.entries}
    assert "e2m1" not in entries and entries["fp4"].n_runs == 18
    assert sorted(r.scheme for r in res.residuals).count("fp4") == 18


def test_a_capitalised_bf16_is_the_decoupled_reference(tmp_path):
    """'BF16' is bf16: the decoupled fit pins it at rho = 1 rather than finding no reference."""
    rows = _rows({"BF16": "bf16", "int4": "int4", "int2": "int2"})
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = F.fit(load_runs(path), model="decoupled", starts=SMALL_GRID, profile=False)
    caps = {c.scheme: c for c in res.capacities}
    assert caps["bf16"].reference and caps["bf16"].rho == 1.0
    assert caps["int2"].rho == pytest.approx(_rho("int2") / _rho("bf16"), rel=1e-5)


def test_a_scheme_the_file_labels_itself_stays_its_own():
    """A label the file gives (a CSV's scheme cell) is the user's: runs of one format under two
    labels stay two schemes."""
    rows = _rows({"bf16": "bf16", "int4": "int4", "e2m1": "fp4", "int2": "int2"})
    runs = [Run(scheme="recipe-b" if r["weights"] == "e2m1" else r["weights"], weights=r["weights"],
                N=r["N"], D=r["D"], loss=r["loss"]) for r in rows]
    runs += [Run(scheme="fp4", weights="fp4", N=r.N, D=r.D, loss=r.loss) for r in runs if r.scheme == "recipe-b"]
    res = F.fit(runs, model="decoupled", starts=SMALL_GRID, profile=False)
    assert {"recipe-b", "fp4"} <= {c.scheme for c in res.capacities}


def test_a_loss_of_minus_infinity_is_refused_not_skipped_as_diverged(tmp_path, run_cli):
    """A diverged run's loss is NaN or +inf and is skipped with a warning; -inf is no loss at all:
    one line naming it, exit 2."""
    rows = _rows({"bf16": "bf16"})
    lines = [json.dumps(r) for r in rows]
    lines[4] = lines[4].replace(repr(rows[4]["loss"]), "-Infinity")
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    res = run_cli("fit", str(path), "--model", "dense", "--no-heldout")
    assert res.code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "loss = -inf" in res.stderr


def test_a_shorthand_in_two_cases_is_one_scheme_and_a_format_file_path_is_left_alone(tmp_path):
    """'HAD128+INT8' and 'had128+int8' (a shorthand, no catalog name) are one scheme under the
    shorthand's own lower-case name; a weights cell naming a format file keeps its scheme."""
    from gmse_cli.fit.spellings import pool_spellings

    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\n[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n')
    runs = [Run(scheme=f"W:int4 A:{a}", weights="int4", activations=a, N=1e8, D=1e9, loss=3.0)
            for a in ("HAD128+INT8", "had128+int8", "Had128+Int8")]
    runs.append(Run(scheme=str(toml), weights=str(toml), N=1e8, D=1e9, loss=3.0))
    pooled, notes = pool_spellings(runs)
    assert [r.scheme for r in pooled] == ["W:int4 A:had128+int8"] * 3 + [str(toml)]
    assert len(notes) == 1 and "'W:int4 A:HAD128+INT8'" in notes[0]


def test_a_large_runs_file_reads_each_catalog_format_once(tmp_path, monkeypatch):
    """Resolving a run's format read and parsed its catalog file for every run (1.7 ms a run: a
    300,000-run CSV took 200 s to reach the bad value on its last line). A file of thousands of
    runs naming three formats now reads at most three catalog files, as CSV and as JSON lines."""
    import importlib

    catalog_module = importlib.import_module("gmse_cli.spec.catalog")
    reads = []
    real = catalog_module.load_format_toml
    monkeypatch.setattr(catalog_module, "load_format_toml", lambda path: reads.append(path) or real(path))
    catalog_module.catalog.cache_clear()  # the one-file lookups, as in a fresh process
    names = ("int4", "int2", "fp4")
    rows = [(names[i % 3], 1e7 * (1 + i % 7), 1e9 * (1 + i % 5), 3.0 + i * 1e-4) for i in range(3000)]
    csv_path, jsonl_path = tmp_path / "runs.csv", tmp_path / "runs.jsonl"
    csv_path.write_text("weights,N,D,loss\n" + "".join(f"{w},{n!r},{d!r},{x!r}\n" for w, n, d, x in rows))
    jsonl_path.write_text("".join(json.dumps({"weights": w, "N": n, "D": d, "loss": x}) + "\n" for w, n, d, x in rows))
    for path in (csv_path, jsonl_path):
        runs = load_runs(path)
        assert len(runs) == 3000 and {r.scheme for r in runs} == set(names)
    assert len(reads) <= len(names)
