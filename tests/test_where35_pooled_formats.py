"""--where selects a format as `uscl fit` pools it, however the runs file spells it.

Regression: `--where weights=fp4` compared the cells as written, before `uscl fit` pools the
spellings of one format (fp4, e2m1, FP4): it kept the runs written `fp4` and silently dropped the
same format's runs written `e2m1` or `FP4`, and `weights=e2m1` kept another third; `!=` and `!~`
kept the other spellings of the format they drop. A value naming no format and no run's value
(`weights!=fp44`) silently kept every run.
"""

from __future__ import annotations

import json

import pytest

from gmse_cli.runs import load_runs, select

SPELLINGS = ("fp4", "e2m1", "FP4")
GRID = [(n, tpp) for n in (1e7, 3e7, 1e8, 3e8) for tpp in (10.0, 40.0)]


def _loss(n: float, d: float, rho: float) -> float:
    """A Chinchilla law with capacity rho: the runs are noiseless, so every fit is exact."""
    return 1.8 + 400.0 / (rho * n) ** 0.34 + 2000.0 / d ** 0.37


def _rows(spellings: tuple[str, ...], *, fp4: bool = True, others: bool = True) -> list[tuple[str, float, float, float]]:
    """(weights, N, D, loss): bf16 and int4 runs, and fp4 runs written in turn as ``spellings``."""
    rows = []
    for i, (n, tpp) in enumerate(GRID):
        if others:
            rows.append(("bf16", n, n * tpp, _loss(n, n * tpp, 1.0)))
            rows.append(("int4", n, n * tpp, _loss(n, n * tpp, 0.8)))
        if fp4:
            rows.append((spellings[i % len(spellings)], n, n * tpp, _loss(n, n * tpp, 0.6)))
    return rows


def _write(path, rows) -> str:
    path.write_text("N,D,loss,weights\n" + "".join(f"{n!r},{d!r},{loss!r},{w}\n" for w, n, d, loss in rows))
    return str(path)


@pytest.mark.parametrize("value", ["fp4", "e2m1", "FP4", "E2M1"])
def test_a_format_named_any_way_selects_its_runs_in_every_spelling(tmp_path, value):
    rows = _rows(SPELLINGS)
    runs = load_runs(_write(tmp_path / "runs.csv", rows))
    fp4 = [(n, d) for w, n, d, _ in rows if w in SPELLINGS]
    rest = [(n, d, w) for w, n, d, _ in rows if w not in SPELLINGS]
    assert len(fp4) == len(GRID) and len({w for w, *_ in rows} & set(SPELLINGS)) == 3
    assert [(r.N, r.D) for r in select(runs, [f"weights={value}"])] == fp4
    assert [(r.N, r.D, r.weights) for r in select(runs, [f"weights!={value}"])] == rest
    assert [(r.N, r.D) for r in select(runs, [f"scheme={value}"])] == fp4
    assert [(r.N, r.D, r.weights) for r in select(runs, [f"scheme!={value}"])] == rest
    # a substring of any name the runs give the format: the whole format, or none of it
    assert [(r.N, r.D) for r in select(runs, [f"weights~{value[1:]}"])] == fp4
    assert [(r.N, r.D, r.weights) for r in select(runs, [f"weights!~{value[1:]}"])] == rest


def test_activations_and_w_a_schemes_are_matched_by_format_too(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights,activations\n"
                    "1e7,1e8,3.5,int4,e2m1\n1e7,2e8,3.4,INT4,fp4\n1e7,3e8,3.3,int4,FP4\n"
                    "1e7,4e8,3.2,int4,int4\n1e7,5e8,3.1,bf16,\n")
    runs = load_runs(path)
    d = [r.D for r in runs]
    assert [r.D for r in select(runs, ["activations=fp4"])] == d[:3]
    assert [r.D for r in select(runs, ["activations!=e2m1"])] == d[3:]
    assert [r.D for r in select(runs, ["activations=none"])] == d[4:]
    assert [r.D for r in select(runs, ["scheme=W:int4 A:e2m1"])] == d[:3]
    assert [r.D for r in select(runs, ["scheme=w:INT4 a:fp4"])] == d[:3]
    assert [r.D for r in select(runs, ["scheme!=W:int4 A:fp4"])] == d[3:]


def test_a_scheme_the_file_labels_stays_matched_as_written(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights,scheme\n1e7,1e8,3.5,e2m1,mine\n1e7,2e8,3.4,fp4,\n1e7,3e8,3.3,e2m1,\n")
    runs = load_runs(path)
    assert [r.D for r in select(runs, ["scheme=fp4"])] == [2e8, 3e8]  # not the run labelled 'mine'
    assert [r.D for r in select(runs, ["scheme=mine"])] == [1e8]
    assert [r.D for r in select(runs, ["scheme~fp4"])] == [2e8, 3e8]
    # its weights are still the format fp4
    assert [r.D for r in select(runs, ["weights=fp4"])] == [1e8, 2e8, 3e8]


def _fit(run_cli, path: str, *args: str) -> dict:
    res = run_cli("fit", path, "--json", *args)
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)["results"][0]


def _same_fit(a: dict, b: dict) -> None:
    for key in ("n_runs", "A", "alpha", "B", "beta", "E", "fit_error"):
        assert a[key] == b[key], key


def test_where_on_a_format_fits_what_a_file_of_one_spelling_fits(run_cli, tmp_path):
    mixed = _write(tmp_path / "mixed.csv", _rows(SPELLINGS))
    one = _write(tmp_path / "one.csv", _rows(("fp4",)))
    reference = _fit(run_cli, one, "--model", "dense", "--where", "weights=fp4")
    assert reference["n_runs"] == len(GRID)
    assert reference["alpha"] == pytest.approx(0.34, rel=1e-3)  # the fp4 runs' own law
    for value in ("fp4", "e2m1"):
        _same_fit(_fit(run_cli, mixed, "--model", "dense", "--where", f"weights={value}"), reference)


def test_where_not_a_format_drops_every_spelling_of_it(run_cli, tmp_path):
    mixed = _write(tmp_path / "mixed.csv", _rows(SPELLINGS))
    without = _write(tmp_path / "without.csv", _rows(SPELLINGS, fp4=False))
    reference = _fit(run_cli, without, "--model", "decoupled")
    assert reference["n_runs"] == 2 * len(GRID)
    int4 = next(c for c in reference["capacities"] if c["scheme"] == "int4")
    assert int4["rho"] == pytest.approx(0.8, rel=1e-3)
    for where in ("weights!=e2m1", "weights!=fp4", "weights!~e2m1", "scheme!=FP4"):
        _same_fit(_fit(run_cli, mixed, "--model", "decoupled", "--where", where), reference)


@pytest.mark.parametrize("where", ["weights=fp44", "weights!=fp44", "activations=int44", "scheme!=W:int4 A:zz"])
def test_a_value_that_names_no_format_and_no_run_is_one_error_line(run_cli, tmp_path, where):
    mixed = _write(tmp_path / "mixed.csv", _rows(SPELLINGS))
    res = run_cli("fit", mixed, "--model", "dense", "--where", where)
    assert res.code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and where.partition("=")[2] in lines[0] and "no run" in lines[0], res.stderr


def test_a_format_no_run_has_names_the_where_that_keeps_nothing(run_cli, tmp_path):
    """int5 is a format, so `weights=int5` is no typo; the error used to say only 'no runs left'."""
    mixed = _write(tmp_path / "mixed.csv", _rows(SPELLINGS))
    res = run_cli("fit", mixed, "--model", "dense", "--where", "N>1", "--where", "weights=int5")
    lines = res.stderr.strip().splitlines()
    assert res.code == 2 and len(lines) == 1, res.stderr
    assert "no runs left" in lines[0] and "--where 'weights=int5' matches none" in lines[0]
    assert f"({3 * len(GRID)} loaded" in lines[0]
