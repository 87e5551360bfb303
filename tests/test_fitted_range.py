"""A law records the N and D/N of the runs it was fitted on; rank and predict say in one line when
a prediction lies beyond them (an extrapolation its intervals do not account for)."""

from __future__ import annotations

import json
import math

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
    from gmse_cli.spec import Family

    fitted = _range(1e6, 2e6, 10.0, 20.0).model_copy(update={"gmse": {Family.SPARSITY: (0.01, 0.5)}})
    law = shipped_law().model_copy(update={"fitted_range": fitted})
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
    noisy = tmp_path / "noisy.toml"
    noisy.write_text(text.replace("0.01,\n    0.5,", "0.0,\n    0.5,"))
    with pytest.raises(LawError, match=r"noisy.toml: .*fitted_range.gmse.sparsity = \[0.0, 0.5\]"):
        load_law(noisy)


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


def test_the_shipped_law_records_the_gmses_its_curves_were_fitted_at():
    from scipy.special import ndtri

    from gmse_cli.law import shipped_law
    from gmse_cli.spec import Family

    ranges = shipped_law().fitted_range.gmse
    # The noisiest quantizer fitted: QuEST's 1-bit grid at its optimal scale, sign(x) sqrt(2/pi).
    assert ranges[Family.QUANTIZATION][1] == pytest.approx(1 - 2 / math.pi, rel=1e-12)
    # The sparsest point the sparsity curve was calibrated on: 90% magnitude pruning, closed form.
    t = ndtri(0.95)
    assert ranges[Family.SPARSITY][1] == pytest.approx(0.9 - 2 * t * math.exp(-t * t / 2) / math.sqrt(2 * math.pi),
                                                       rel=1e-12)
    assert Family.VQ not in ranges  # no VQ run backs the VQ curve


def test_beyond_gmse_names_a_missing_family_or_a_noisier_stage():
    from gmse_cli.law import FittedRange
    from gmse_cli.spec import Family

    fitted = FittedRange(params=(1e6, 2e6), tokens_per_param=(10.0, 20.0), runs=3, provenance="test",
                         gmse={Family.QUANTIZATION: (1e-4, 0.2)})
    assert fitted.beyond_gmse([(Family.QUANTIZATION, 0.2), (Family.QUANTIZATION, 1e-9), (Family.NONE, 0.5)]) is None
    assert fitted.beyond_gmse([(Family.QUANTIZATION, 0.3)]) == "quantization GMSE 0.3 is above the largest fitted (0.2)"
    # a GMSE just above the end is shown to the digits that tell the two apart, not both as 0.2
    assert fitted.beyond_gmse([(Family.QUANTIZATION, 0.20004)]) == (
        "quantization GMSE 0.20004 is above the largest fitted (0.2)")
    assert fitted.beyond_gmse([(Family.VQ, 0.01), (Family.VQ, 0.02)]) == "no fitted run had a vq stage"
    unrecorded = fitted.model_copy(update={"gmse": None})
    assert unrecorded.beyond_gmse([(Family.VQ, 0.01)]) is None


def test_rank_flags_rows_whose_capacity_no_fitted_run_backs(run_cli):
    rows = json.loads(run_cli("rank", "int4", "e8p", "vq2-b4", "block16-95", "--json").stdout)["results"]
    flags = {r["name"]: r["beyond_fitted_gmse"] for r in rows}
    assert flags["int4"] is None
    assert flags["e8p"] == flags["vq2-b4"] == "no fitted run had a vq stage"
    assert flags["block16-95"].startswith("sparsity GMSE ")
    text = run_cli("rank", "int4", "e8p", "vq2-b4").stdout
    assert "! e8p, vq2-b4: capacity read beyond the law's fitted runs, no fitted run had a vq stage" in text


def test_a_fit_records_the_gmses_of_the_stages_it_fitted(shared_data):
    from gmse_cli.fit import fit
    from gmse_cli.law import shipped_law
    from gmse_cli.runs import load_runs
    from gmse_cli.spec import Family

    runs = load_runs([shared_data / "quest_runs.json"])
    ranges = fit(runs, model="unified", bootstrap=0, seed=0, loso=False, profile=False,
                 base_law=shipped_law()).fitted_range.gmse
    assert ranges[Family.QUANTIZATION][1] == pytest.approx(1 - 2 / math.pi, rel=1e-12)
    # QuEST's only sparse runs prune pairs 2:4 (FourEight): 5/24 of the energy, closed form.
    assert ranges[Family.SPARSITY] == pytest.approx((5 / 24, 5 / 24), rel=1e-12)
    assert Family.VQ not in ranges


def test_a_point_just_beyond_says_by_how_much():
    # 1.003 / 1 was "D/N = 1.003 is 1x above the largest fitted (1)": beyond, but by a ratio read as none.
    from gmse_cli.law import FittedRange

    fitted = FittedRange(params=(30e6, 800e6), tokens_per_param=(0.5, 1.0), runs=4, provenance="t")
    assert fitted.beyond(100e6, 100e6 * 1.003) == "D/N = 1.003 is 0.3% above the largest fitted (1)"
    assert fitted.beyond(100e6, 100e6 * 0.4999) == "D/N = 0.4999 is 0.02% below the smallest fitted (0.5)"
