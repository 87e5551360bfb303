"""A law records the N and D/N of the runs it was fitted on; rank and predict say in one line when
a prediction lies beyond them (an extrapolation its intervals do not account for)."""

from __future__ import annotations

import json

import pytest


def _range(low_n, high_n, low_t, high_t):
    from gmse_cli.law import FittedRange

    return FittedRange(params=(low_n, high_n), tokens_per_param=(low_t, high_t), runs=3, provenance="test")


def test_the_shipped_law_records_the_range_of_quests_runs(shared_data):
    from gmse_cli.law import shipped_law

    records = json.loads((shared_data / "quest_runs.json").read_text())
    n = [r["non_embedding_parameters"] for r in records]
    per_param = [r["tokens"] / r["non_embedding_parameters"] for r in records]
    fitted = shipped_law().fitted_range
    assert fitted is not None and fitted.runs == len(records) == 104
    assert fitted.params == (min(n), max(n))
    assert fitted.tokens_per_param == pytest.approx((min(per_param), max(per_param)), rel=1e-15)


def test_inside_and_at_the_edges_nothing_is_said():
    fitted = _range(30e6, 800e6, 25.0, 100.0)
    assert fitted.beyond(200e6, 200e6 * 100) is None
    assert fitted.beyond(30e6, 30e6 * 25) is None  # a fitted run's own corner
    assert fitted.beyond(800e6, 800e6 * 100) is None


def test_beyond_names_each_axis_and_how_far():
    fitted = _range(30e6, 800e6, 25.0, 100.0)
    above = fitted.beyond(7e9, 7e9 * 50)
    assert above == "N = 7B is 8.75x above the largest fitted (800M)"  # 7e9 / 800e6 = 8.75
    below = fitted.beyond(200e6, 200e6 * 20)
    assert below == "D/N = 20 is 1.25x below the smallest fitted (25)"  # 25 / 20 = 1.25
    both = fitted.beyond(10e6, 10e6 * 1000)
    assert both.split("; ") == ["N = 10M is 3x below the smallest fitted (30M)",
                                "D/N = 1000 is 10x above the largest fitted (100)"]


@pytest.mark.parametrize(("params", "per_param"), [((0.0, 1e6), (1.0, 2.0)), ((2e6, 1e6), (1.0, 2.0)),
                                                   ((1e6, float("inf")), (1.0, 2.0)), ((1e6, 2e6), (-1.0, 2.0))])
def test_a_malformed_range_is_refused_naming_it(params, per_param):
    from gmse_cli.law import FittedRange

    with pytest.raises(ValueError, match=r"fitted_range\.\w+ = .* must be two positive finite numbers, low first"):
        FittedRange(params=params, tokens_per_param=per_param, runs=3, provenance="test")


def test_a_law_file_keeps_its_range_and_a_broken_one_is_one_line(tmp_path):
    from gmse_cli.errors import LawError
    from gmse_cli.law import law_to_toml, load_law, save_law, shipped_law

    law = shipped_law().model_copy(update={"fitted_range": _range(1e6, 2e6, 10.0, 20.0)})
    save_law(law, tmp_path / "mine.toml")
    assert load_law(tmp_path / "mine.toml").fitted_range == law.fitted_range
    text = law_to_toml(law)
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace("runs = 3\n", ""))
    with pytest.raises(LawError, match=r"broken.toml: fitted_range.runs: missing \(a fitted range needs"):
        load_law(broken)
    reversed_ = tmp_path / "reversed.toml"
    reversed_.write_text(text.replace("1000000.0,\n    2000000.0,", "2000000.0,\n    1000000.0,"))
    with pytest.raises(LawError, match=r"reversed.toml: .*fitted_range.params = \[2000000.0, 1000000.0\]"):
        load_law(reversed_)


def test_predict_and_rank_flag_a_prediction_beyond_the_fitted_runs(run_cli):
    inside = run_cli("predict", "int4", "--json")
    assert inside.code == 0 and json.loads(inside.stdout)["results"][0]["beyond_fitted_range"] is None
    assert "beyond the runs" not in run_cli("predict", "int4").stdout

    far = run_cli("predict", "int4", "--params", "7B", "--tokens", "20x")
    assert far.code == 0
    flags = [line for line in far.stdout.splitlines() if line.startswith("! beyond the runs the law was fitted on")]
    assert len(flags) == 1
    assert "N = 7B is 8.51x above the largest fitted (822M)" in flags[0]  # 7e9 / 822,151,168
    assert "D/N = 20 is 1.22x below the smallest fitted (24.32)" in flags[0]  # QuEST's 24.32 / 20

    ranked = run_cli("rank", "int4", "nvfp4", "--params", "7B", "--json")
    rows = json.loads(ranked.stdout)["results"]
    assert [r["beyond_fitted_range"] for r in rows] == ["N = 7B is 8.51x above the largest fitted (822M)"] * 2
    text = run_cli("rank", "int4", "nvfp4", "--params", "7B").stdout
    assert sum(line.startswith("! beyond the runs") for line in text.splitlines()) == 1  # once, not per row


def test_a_fit_records_the_runs_it_fitted(shared_data):
    from gmse_cli.fit import domain_mask, fit
    from gmse_cli.law import shipped_law
    from gmse_cli.runs import load_runs

    runs = load_runs([shared_data / "quest_runs.json"])
    result = fit(runs, model="unified", bootstrap=0, seed=0, loso=False, profile=False, base_law=shipped_law())
    inside = [r for r, keep in zip(runs, domain_mask(runs), strict=True) if keep]
    assert len(inside) < len(runs)  # the unrotated W+A runs are predicted, not fitted
    fitted = result.fitted_range
    assert fitted.runs == result.n_fitted == len(inside)
    assert fitted.params == (min(r.N for r in inside), max(r.N for r in inside))
    assert fitted.tokens_per_param == (min(r.D / r.N for r in inside), max(r.D / r.N for r in inside))
    assert result.to_law("mine").fitted_range == fitted
