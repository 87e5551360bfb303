"""A law written by hand (another paper's constants): README's example loads, a law with no
[fitted_range] or no uncertainty says so once instead of reading like a trusted prediction, and
the slips a hand edit makes are one line naming the key."""

from __future__ import annotations

import json
import math
import re
import tomllib

import numpy as np
import pytest
from conftest import REPO_ROOT

_README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
_NO_RANGE = "records no fitted range"
_NO_SPREAD = "gives its constants no uncertainty"


def _readme_law() -> str:
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", _README, flags=re.S) if "[families.quantization]" in b]
    assert len(blocks) == 1, "README shows one hand-written law"
    return blocks[0]


def _uncommented(text: str) -> str:
    return re.sub(r"(?m)^# ", "", text)


@pytest.fixture
def hand_law(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text(_readme_law())
    return path


def test_the_readme_example_loads_as_written_and_uncommented(tmp_path, hand_law):
    from gmse_cli.law import load_law

    text = _readme_law()
    expected = tomllib.loads(text)  # the values as TOML reads them, not as uscl does
    law = load_law(hand_law)
    for key in ("A", "alpha", "B", "beta", "E"):
        assert getattr(law, key).value == expected[key]["value"]
    curve = law.families["quantization"]
    assert (curve.L.value, curve.F.value, curve.C.value, curve.F.sigma) == (1.0, 0.41, 1.39, 0.02)
    assert law.fitted_range is None and law.draws is None

    ranged = tmp_path / "ranged.toml"
    ranged.write_text(_uncommented(text))
    fitted = load_law(ranged).fitted_range
    assert fitted is not None and fitted.params == (7e7, 1.6e10) and fitted.runs == 400


def test_a_law_without_a_fitted_range_says_so_once_and_in_the_json(run_cli, hand_law):
    ranked = run_cli("rank", "int4", "nvfp4", "fp8-e4m3", "--law", str(hand_law), "--params", "70B")
    assert ranked.code == 0
    assert sum(_NO_RANGE in line for line in ranked.stdout.splitlines()) == 1  # once, not per row
    rows = json.loads(run_cli("rank", "int4", "nvfp4", "--law", str(hand_law), "--params", "70B", "--json").stdout)
    assert [(r["fitted_range_recorded"], r["beyond_fitted_range"]) for r in rows["results"]] == [(False, None)] * 2
    pred = json.loads(run_cli("predict", "int4", "--law", str(hand_law), "--json").stdout)["results"][0]
    assert pred["fitted_range_recorded"] is False

    # the shipped law records its range: inside it nothing is said and the JSON reads true
    shipped = run_cli("predict", "int4")
    assert _NO_RANGE not in shipped.stdout and _NO_SPREAD not in shipped.stdout
    assert json.loads(run_cli("predict", "int4", "--json").stdout)["results"][0]["fitted_range_recorded"] is True


def test_the_hand_written_range_flags_an_extrapolation(run_cli, tmp_path):
    ranged = tmp_path / "ranged.toml"
    ranged.write_text(_uncommented(_readme_law()))
    out = run_cli("predict", "int4", "--law", str(ranged), "--params", "70B", "--tokens", "20x").stdout
    assert _NO_RANGE not in out
    assert f"N = 70B is {70e9 / 1.6e10:.3g}x above the largest fitted (16B)" in out  # 4.375 -> 4.38x
    assert "records no fitted stage GMSEs" not in out
    # int1's GMSE (0.3634, 1 - 2/pi) lies above the README's 0.363: its capacity is flagged
    assert f"quantization GMSE {1 - 2 / math.pi:.4g} is above the largest fitted (0.363)" in run_cli(
        "predict", "int1", "--law", str(ranged)).stdout

    # a range without its stage GMSEs: one line says capacities cannot be checked
    no_gmse = tmp_path / "no-gmse.toml"
    no_gmse.write_text(re.sub(r"(?m)^gmse = .*\n", "", ranged.read_text()))
    lines = run_cli("rank", "int4", "int1", "--law", str(no_gmse)).stdout.splitlines()
    assert sum("records no fitted stage GMSEs" in line for line in lines) == 1


def test_a_law_without_uncertainty_says_its_intervals_are_the_point(run_cli, tmp_path, hand_law):
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(re.sub(r"sigma = [0-9.]+, ", "", _readme_law()))
    out = run_cli("rank", "int4", "nvfp4", "--law", str(fixed))
    assert out.code == 0 and sum(_NO_SPREAD in line for line in out.stdout.splitlines()) == 1
    rows = json.loads(run_cli("rank", "int4", "--law", str(fixed), "--json").stdout)["results"]
    for r in rows:  # int4's table GMSE is exact (quadrature), so its intervals are the point
        assert r["rho_low"] == r["rho"] == r["rho_high"] and r["loss_low"] == r["predicted_loss"] == r["loss_high"]
    # with the README's F and C sigmas the capacity has an interval, and nothing is said
    spread = run_cli("rank", "int4", "nvfp4", "--law", str(hand_law))
    assert _NO_SPREAD not in spread.stdout


@pytest.mark.parametrize("edit, vary_L", [
    ({}, False),                                                    # no sigma anywhere
    ({"alpha": {"sigma": 0.01}}, False),                            # one sigma
    ({"E": {"low": 1.69, "high": 1.69, "sigma": 0.1}}, False),      # an interval of zero width overrides sigma
    ({"quantization.L": {"sigma": 0.1}}, False),                    # L held unless vary_L
    ({"quantization.L": {"sigma": 0.1}}, True),
])
def test_constants_fixed_agrees_with_the_draws(edit, vary_L):
    """A second reading of the same question: do sample_law's draws vary at all?"""
    from gmse_cli.law import Law, constants_fixed, sample_law

    data = tomllib.loads(re.sub(r"sigma = [0-9.]+, ", "", _readme_law()))
    for name, extra in edit.items():
        family, _, key = name.rpartition(".")
        (data["families"][family] if family else data)[key].update(extra)
    law = Law.model_validate(data)
    samples = sample_law(law, draws=64, rng=0, vary_L=vary_L)
    columns = [samples.A, samples.alpha, samples.B, samples.beta, samples.E,
               *(c for curve in samples.curves.values() for c in curve)]
    varies = any(np.ptp(np.asarray(c, dtype=float)) > 0 for c in columns)
    assert constants_fixed(law, vary_L=vary_L) is (not varies)


@pytest.mark.parametrize("text, message", [
    ('A = 406.4\n', r"my\.toml: A: 406\.4 is no constant: write A = \{ value = \.\.\., provenance = \"\.\.\.\" \}"),
    ('alpha = { value = "0.34", provenance = "p" }\n', r"my\.toml: alpha: value = '0\.34' is text; give a number$"),
])
def test_a_hand_slip_is_one_line_naming_the_key(run_cli, tmp_path, text, message):
    law = re.sub(r"(?m)^A = .*\n" if text.startswith("A ") else r"(?m)^alpha = .*\n", text, _readme_law())
    (tmp_path / "my.toml").write_text(law)
    out = run_cli("predict", "int4", "--law", str(tmp_path / "my.toml"))
    assert out.code == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]) and "Value error" not in lines[0]


def test_mse_and_search_say_when_the_law_records_no_stage_gmses(run_cli, tmp_path, hand_law):
    # mse and search read capacities too: a law without [fitted_range.gmse] could flag none of
    # them, which their rows' beyond_fitted_gmse null alone cannot tell from "within"
    from safetensors.numpy import save_file

    weights = tmp_path / "w.safetensors"
    rng = np.random.default_rng(0)
    save_file({"model.layers.0.mlp.up_proj.weight": rng.standard_normal((16, 256)).astype(np.float32)}, str(weights))
    line = "law '{}' records no fitted stage GMSEs"
    for law, recorded in ((str(hand_law), False), ("default", True)):
        mse = run_cli("mse", str(weights), "-f", "int4", "--law", law)
        assert mse.code == 0, mse.stderr
        assert sum(line.format(law) in out for out in mse.stdout.splitlines()) == (0 if recorded else 1)
        rows = json.loads(run_cli("mse", str(weights), "-f", "int4", "--law", law, "--json").stdout)["results"]
        assert [r["fitted_gmse_recorded"] for r in rows] == [recorded]

    found = json.loads(run_cli("search", "--bits", "1.5", "--law", str(hand_law), "--json").stdout)
    assert {p["fitted_gmse_recorded"] for p in found["results"]} == {False}
    assert "records no fitted stage GMSEs" in run_cli("search", "--bits", "1.5", "--law", str(hand_law)).stdout
    assert json.loads(run_cli("predict", "int4", "--law", str(hand_law), "--json").stdout
                      )["results"][0]["fitted_gmse_recorded"] is False


def test_a_search_whose_budget_only_families_the_law_lacks_reach_is_one_line(run_cli, hand_law):
    # at 0.5 bits only VQ and sparse formats fit; the hand law has a quantization curve alone:
    # the race had nothing to refine and stopped on an IndexError traceback
    res = run_cli("search", "--bits", "0.5", "--law", str(hand_law))
    assert res.code == 2
    line = res.stderr.splitlines()[-1]
    assert line.startswith("error: no format in the search space at or below 0.5 bits could be measured: "
                           "law 'chinchilla-quant' has no curve for the family of any of the "), line
