"""Ranking and prediction: the numbers, the Pareto frontier, the CLI and the plot.

Independent references used here: the law's formula written out in this file from the
constants (loss = A (N rho)^-alpha + B D^-beta + E), paper.md's QuEST GMSEs and the magnitude
pruning closed form (see test_law.py), and a brute-force O(n^2) Pareto frontier.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_law import QUEST_GMSE, magnitude_gmse, paper_like_law

from gmse_cli.errors import LawError, SpecError
from gmse_cli.law import Constant, save_law
from gmse_cli.paths import laws_dir
from gmse_cli.rank import (
    DEFAULT_TOKENS_PER_PARAM,
    RankRow,
    compare,
    pareto_front,
    pareto_mask,
    predict,
    rank,
    sort_rows,
)
from gmse_cli.spec import Family, Scheme, catalog, resolve_format

# Formats with an exact GMSE path (deterministic and fast) plus one composite.
EXACT = ["int1", "int2", "int3", "int4", "int8", "sparse-50", "sparse-80", "sparse-50+int4", "fp4"]


@pytest.fixture(scope="module")
def law():
    return paper_like_law()


@pytest.fixture(scope="module")
def rows(law):
    return rank(EXACT, law=law, params=200e6)


@pytest.fixture
def law_file(tmp_path, law):
    path = tmp_path / "law.toml"
    save_law(law, path)
    return str(path)


def by_name(rows):
    return {r.name: r for r in rows}


def law_loss(law, n, d, rho):
    """The scaling law written out from the constants."""
    return law.A.value * (n * rho) ** -law.alpha.value + law.B.value * d ** -law.beta.value + law.E.value


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def test_rows_follow_the_law(rows, law):
    r = by_name(rows)
    q = law.families[Family.QUANTIZATION]
    for bits in (1, 2, 3, 4):
        row = r[f"int{bits}"]
        assert row.gmse == pytest.approx(QUEST_GMSE[bits], rel=2e-5)
        assert row.rho == pytest.approx(q.rho(QUEST_GMSE[bits]), rel=1e-4)
        assert row.rho_single_gmse == row.rho
    # bits/param comes from the format; tokens default to 100 per parameter
    assert r["int4"].bits_per_param == resolve_format("int4").bits_per_param()
    assert all(row.tokens == DEFAULT_TOKENS_PER_PARAM * 200e6 for row in rows)


def test_composite_is_the_product_of_its_stages(rows, law):
    row = by_name(rows)["sparse-50+int4"]
    expect = law.families[Family.SPARSITY].rho(magnitude_gmse(0.5)) * law.families[Family.QUANTIZATION].rho(QUEST_GMSE[4])
    assert row.rho == pytest.approx(expect, rel=1e-4)
    # the single-GMSE reading passes the whole pipeline's (larger) GMSE through the quantization curve
    assert row.rho_single_gmse == pytest.approx(law.families[Family.QUANTIZATION].rho(row.gmse), rel=1e-12)
    assert row.rho_single_gmse != pytest.approx(row.rho, rel=1e-3)


def test_rho_bounded_and_monotone(rows, law):
    for row in rows:
        assert 0 < row.rho_low <= row.rho <= row.rho_high <= 1.0
    ints = [by_name(rows)[f"int{b}"] for b in (1, 2, 3, 4, 8)]
    assert all(a.gmse > b.gmse and a.rho < b.rho for a, b in zip(ints, ints[1:], strict=False))


def test_params_to_match_and_memory(rows, law):
    dense = law_loss(law, 200e6, 2e10, 1.0)
    for row in rows:
        assert row.effective_params == pytest.approx(200e6 * row.rho, rel=1e-12)
        assert row.params_to_match * row.rho == pytest.approx(200e6, rel=1e-12)
        assert row.memory_to_match_bytes == pytest.approx(row.params_to_match * row.bits_per_param / 8, rel=1e-12)
        # a model of N / rho parameters over this format reaches the dense model's loss
        assert law_loss(law, row.params_to_match, 2e10, row.rho) == pytest.approx(dense, rel=1e-12)
        assert row.predicted_loss == pytest.approx(law_loss(law, 200e6, 2e10, row.rho), rel=1e-12)
        assert row.delta_loss_vs_bf16 == pytest.approx(row.predicted_loss - dense, rel=1e-9, abs=1e-15)
        assert row.loss_low <= row.predicted_loss <= row.loss_high
        assert row.delta_loss_low <= row.delta_loss_vs_bf16 <= row.delta_loss_high


def test_weights_times_activations(law):
    w_only, wa = rank(["int4", Scheme(weights=resolve_format("int4"), activations=resolve_format("int2"))], law=law)
    assert wa.activations == "int2" and wa.name == "W:int4 A:int2"
    q = law.families[Family.QUANTIZATION]
    assert wa.rho == pytest.approx(w_only.rho * q.rho(QUEST_GMSE[2]), rel=1e-4)
    assert wa.act_gmse == pytest.approx(QUEST_GMSE[2], rel=2e-5)
    # --act applies to every row and gives the same numbers
    (via_act,) = rank(["int4"], law=law, act="int2")
    assert via_act.rho == wa.rho and via_act.rho_low == wa.rho_low
    with pytest.raises(SpecError, match="already has activations"):
        rank([Scheme(weights=resolve_format("int4"), activations=resolve_format("int2"))], law=law, act="int8")


def test_intervals_are_seeded_and_independent_of_the_company(law, rows):
    alone = rank(["int3"], law=law)[0]
    assert alone.rho_low == by_name(rows)["int3"].rho_low
    assert alone.loss_high == by_name(rows)["int3"].loss_high
    other_seed = rank(["int3"], law=law, seed=1)[0]
    assert other_seed.rho == alone.rho and other_seed.rho_low != alone.rho_low


def test_predict_breakdown(law):
    pred = predict("sparse-50+int4", 1e9, 5e10, law, act="int8")
    assert [(s.tensor, s.family) for s in pred.stages] == [
        ("weights", Family.SPARSITY), ("weights", Family.QUANTIZATION), ("activations", Family.QUANTIZATION),
    ]
    assert pred.stages[0].gmse == pytest.approx(magnitude_gmse(0.5), rel=1e-9)
    assert pred.rho == pytest.approx(math.prod(s.rho for s in pred.stages), rel=1e-12)
    assert pred.params_term == pytest.approx(law.A.value * (1e9 * pred.rho) ** -law.alpha.value, rel=1e-12)
    assert pred.data_term == pytest.approx(law.B.value * 5e10 ** -law.beta.value, rel=1e-12)
    assert pred.irreducible == law.E.value
    assert pred.predicted_loss == pytest.approx(pred.params_term + pred.data_term + pred.irreducible, rel=1e-12)
    assert pred.dense_loss == pytest.approx(law_loss(law, 1e9, 5e10, 1.0), rel=1e-12)


def test_predict_term_that_overflows_is_infinite_not_an_error():
    """A huge exponent on a count below 1 overflows: an infinite term and loss, never a traceback.

    Regression: Python's float power raised OverflowError for A (N rho)^-alpha with N rho < 1
    (a valid law with alpha 5000 at N = 1), and numpy's printed RuntimeWarnings on stderr.
    """
    import warnings

    law = paper_like_law(alpha=Constant(value=5000.0, provenance="test"), beta=Constant(value=3000.0, provenance="test"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = predict("int4", 1.0, 1.0, law, draws=100)
        assert 0 < pred.rho < 1  # so (N rho)^-alpha = rho^-5000 > 1e300: beyond a float
        assert pred.params_term is None and pred.predicted_loss is None and pred.delta_loss_vs_bf16 is None
        # At N = 1 the dense model's term is A * 1^-alpha = A; at D = 1 the data term is B.
        assert pred.dense_loss == pytest.approx(law.A.value + law.B.value + law.E.value, rel=1e-12)
        assert pred.data_term == pytest.approx(law.B.value, rel=1e-12)
    # Half a token is a unit slip, refused as on the command line (0.5^-3000 would overflow too).
    with pytest.raises(LawError, match="tokens = 0.5 must be a finite count of at least 1"):
        predict("int4", 1.0, 0.5, law, draws=100)


def test_rank_and_compare_take_one_format_alone_and_compare_takes_none(law):
    # Regression: rank("int4") read the name a character at a time; compare([]) raised numpy's
    # "zero-size array to reduction" where rank([]) ranks nothing.
    assert rank("int4", law=law, params=2e8) == rank(["int4"], law=law, params=2e8)
    assert compare("int4", law=law).p_most_capacity == (1.0,)
    empty = compare([], law=law)
    assert empty.rows == () and empty.p_most_capacity == () and empty.p_least_memory == ()


def test_compare_uses_the_shared_draws(law):
    # One curve, exact GMSEs: the lower GMSE has the higher capacity in every draw of F and C,
    # although the two marginal intervals overlap.
    result = compare(["fp4", "int4", "sparse-50"], law=law)
    fp4, int4, _ = result.rows
    assert fp4.rho_high > int4.rho_low  # overlapping marginals
    assert result.p_most_capacity[0] == 0.0  # fp4 never beats int4, so never the best of three
    assert compare(["fp4", "int4"], law=law).p_most_capacity == (0.0, 1.0)
    assert compare(["fp4", "int4"], law=law).p_least_memory == (0.0, 1.0)
    assert all(0.0 <= p <= 1.0 for p in result.p_most_capacity) and sum(result.p_most_capacity) >= 1.0
    with pytest.raises(TypeError, match="unexpected keywords"):
        compare(["int4"], law=law, sorting="rho")


def test_gmse_options_reach_the_engine_from_rank_predict_and_compare(law):
    # int4 stores one fp32 scale per row: 4 + 32/2048 bits per parameter on rows of 2048.
    expected = 4 + 32 / 2048
    assert rank(["int4"], law=law, row_length=2048)[0].bits_per_param == expected
    assert predict("int4", law=law, row_length=2048).bits_per_param == expected
    assert compare(["int4"], law=law, row_length=2048).rows[0].bits_per_param == expected
    # Monte Carlo asked for where quadrature exists: the estimate says so.
    (row,) = rank(["int4"], law=law, method="monte-carlo", rel_err=1e-2)
    assert row.gmse_low < row.gmse < row.gmse_high
    with pytest.raises(TypeError, match="unexpected keywords"):
        predict("int4", law=law, progress=True)


def test_uncovered_family_and_bad_scale(law):
    narrow = paper_like_law(families={Family.QUANTIZATION: law.families[Family.QUANTIZATION]})
    with pytest.raises(LawError, match="format 'sparse-50': .*no capacity curve for family 'sparsity'"):
        rank(["int4", "sparse-50"], law=narrow)
    for params, tokens in ((0, None), (-5, None), (1e8, 0.0), (math.nan, None), (0.5, None), (1e8, 0.25)):
        with pytest.raises(LawError, match="must be a finite count of at least 1"):
            rank(["int4"], law=law, params=params, tokens=tokens)


# --------------------------------------------------------------------------------------------
# Pareto frontier and sorting
# --------------------------------------------------------------------------------------------


def brute_force_front(bits, rho):
    n = len(bits)
    return np.array([
        not any(bits[j] <= bits[i] and rho[j] >= rho[i] and (bits[j] < bits[i] or rho[j] > rho[i]) for j in range(n))
        for i in range(n)
    ])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1.0, 2.0, 2.5, 3.0, 4.0, 4.25, 8.0]), st.sampled_from([0.1, 0.3, 0.5, 0.8, 0.9])), min_size=1, max_size=20))
def test_pareto_mask_matches_brute_force(points):
    bits = np.array([p[0] for p in points])
    rho = np.array([p[1] for p in points])
    assert np.array_equal(pareto_mask(bits, rho), brute_force_front(bits, rho))


def test_pareto_rows(rows):
    front = pareto_front(rows)
    assert front == sorted([r for r in rows if r.pareto], key=lambda r: r.bits_per_param)
    assert np.array_equal(
        np.array([r.pareto for r in rows]),
        brute_force_front([r.bits_per_param for r in rows], [r.rho for r in rows]),
    )
    names = {r.name for r in front}
    # int4 and fp4 cost the same bits and QuEST's int4 has the lower GMSE (paper.md): fp4 is dominated
    assert "int4" in names and "fp4" not in names


def test_sort_rows(rows):
    by_bits = sort_rows(rows, "bits_per_param")
    assert [r.bits_per_param for r in by_bits] == sorted(r.bits_per_param for r in rows)
    by_rho = sort_rows(rows, "rho")  # more is better: descending
    assert [r.rho for r in by_rho] == sorted((r.rho for r in rows), reverse=True)
    assert [r.rho for r in sort_rows(rows, "rho", reverse=True)] == sorted(r.rho for r in rows)
    with_none = sort_rows(rows, "act_gmse")  # all None: order kept
    assert [r.name for r in with_none] == [r.name for r in rows]
    with pytest.raises(SpecError, match="cannot sort by 'speed'"):
        sort_rows(rows, "speed")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

JSON_KEYS = {"name", "bits_per_param", "gmse", "rho", "rho_low", "rho_high", "effective_params", "predicted_loss", "pareto"}


def test_cli_rank_json(run_cli, law_file, law):
    res = run_cli("rank", "int2", "int4", "sparse-50+int4", "--law", law_file, "--params", "1.5B", "--tokens", "50x",
                  "--sort", "rho", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"]
    assert JSON_KEYS <= set(data[0])
    assert [d["rho"] for d in data] == sorted((d["rho"] for d in data), reverse=True)
    assert all(d["params"] == 1.5e9 and d["tokens"] == 75e9 for d in data)
    # the JSON is the API's rows
    api = by_name(rank(["int2", "int4", "sparse-50+int4"], law=law, params=1.5e9, tokens=75e9))
    for d in data:
        assert RankRow.model_validate(d) == api[d["name"]]


def test_cli_rank_csv_and_table(run_cli, law_file):
    res = run_cli("rank", "int4", "fp4", "--law", law_file, "--csv")
    assert res.code == 0, res.stderr
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["name"] for r in table] == ["int4", "fp4"]  # default sort: memory to match bf16
    assert {"rho", "pareto", "memory_to_match_bytes"} <= set(table[0])
    res = run_cli("rank", "int4", "sparse-50+int4", "--law", law_file)
    assert res.code == 0, res.stderr
    # the single-GMSE capacity beside the factorized one (its header on two lines: rho / single-GMSE)
    assert "Pareto" in res.stdout and "sparse-50+int4" in res.stdout and "single-GMSE" in res.stdout


def test_cli_family_filter_and_act(run_cli, law_file):
    res = run_cli("rank", "int4", "sparse-50", "sparse-50+int4", "--family", "sparsity", "--act", "int8",
                  "--law", law_file, "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"]
    assert sorted(d["name"] for d in data) == ["W:sparse-50 A:int8", "W:sparse-50+int4 A:int8"]


def test_cli_predict(run_cli, law_file):
    res = run_cli("predict", "sparse-50+int4", "--params", "200M", "--tokens", "20e9", "--law", law_file, "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"][0]
    assert len(data["stages"]) == 2 and data["tokens"] == 20e9
    assert data["predicted_loss"] == pytest.approx(data["params_term"] + data["data_term"] + data["irreducible"])
    res = run_cli("predict", "sparse-50+int4", "--law", law_file)
    assert res.code == 0
    for text in ("A (N rho)^-alpha", "B D^-beta", "sparse-50+int4[sparsify]", "parameters to match bf16"):
        assert text in res.stdout


def test_cli_plot(run_cli, law_file, tmp_path):
    import matplotlib.image

    path = tmp_path / "rank.png"
    res = run_cli("rank", *EXACT, "--law", law_file, "--plot", str(path), "--json")
    assert res.code == 0, res.stderr
    json.loads(res.stdout)["results"]  # the plot note went to stderr, stdout stays JSON
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 400 <= height <= 3000 and 800 <= width <= 4000
    rgb = image[..., :3].reshape(-1, 3)
    # non-blank: many distinct colours, and a good share of pixels that are not background
    assert len(np.unique(np.round(rgb * 255).astype(int), axis=0)) > 50
    assert np.mean(np.any(rgb < 0.9, axis=1)) > 0.02


@pytest.mark.parametrize("ratio, per_param", [("20x", 20.0), ("1e3x", 1e3), ("2.5E1X", 25.0), (".5x", 0.5)])
def test_cli_tokens_per_param_takes_the_count_grammar(run_cli, law_file, ratio, per_param):
    # Regression: '1e3x' was refused although '1e3' is a count and '20x' a ratio.
    res = run_cli("predict", "int4", "--law", law_file, "--params", "2e8", "--tokens", ratio, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["tokens"] == pytest.approx(per_param * 2e8, rel=1e-15)


@pytest.mark.parametrize("command", ["predict", "rank"])
def test_a_bare_count_that_is_likely_billions_warns_once_and_is_taken_as_given(run_cli, law_file, command):
    # '--params 7' meant 7B more often than 7 parameters: one warning line, the count as written
    res = run_cli(command, "int4", "--law", law_file, "--params", "7", "--tokens", "20", "--json")
    assert res.code == 0, res.stderr
    assert res.stderr.splitlines() == [
        "warning: --params 7 is 7 parameters; for 7 billion write --params 7B",
        "warning: --tokens 20 is 20 tokens; for 20 billion write --tokens 20B, or 20x for tokens per parameter",
    ]
    row = json.loads(res.stdout)["results"][0]
    assert (row["params"], row["tokens"]) == (7, 20)


def test_a_bare_count_in_the_thousands_is_named_in_millions(run_cli, law_file):
    # '--params 5000' slipped from 5000M (5B) no less likely than from 5000B (5T): millions
    res = run_cli("predict", "int4", "--law", law_file, "--params", "5000", "--tokens", "20x", "--json")
    assert res.code == 0, res.stderr
    assert res.stderr.splitlines() == ["warning: --params 5000 is 5000 parameters; for 5000 million write --params 5000M"]
    assert json.loads(res.stdout)["results"][0]["params"] == 5000


@pytest.mark.parametrize("option", ["--params", "--tokens"])
def test_a_bare_fraction_refused_as_under_one_names_billions(run_cli, law_file, option):
    # '--params 0.5' (a 0.5B model) is refused, being under one parameter: the refusal names 0.5B
    # as the warning for '--params 7' names 7B
    res = run_cli("predict", "int4", "--law", law_file, "--params", "7B", option, "0.5")
    assert res.code == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: Invalid value for '{option}': '0.5' is not a finite count of at least 1; "
                           "for 0.5 billion write 0.5B"), line


@pytest.mark.parametrize("params", ["7B", "7k", "5e3", "9999.5k", "55536", "10000"])
def test_a_count_with_a_suffix_or_an_exponent_or_of_a_tiny_preset_does_not_warn(run_cli, law_file, params):
    # tiny-50k, the smallest CPU preset, has 55,536 non-embedding parameters
    res = run_cli("predict", "int4", "--law", law_file, "--params", params, "--json")
    assert res.code == 0, res.stderr
    assert "warning" not in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "0"], "--params 0 must be positive"),
        (["--params=-2e8"], "--params -2e8 must be positive"),
        (["--params", "lots"], "--params 'lots' is not a positive count"),
        (["--tokens", "0"], "--tokens 0 must be positive"),
        (["--tokens", "20y"], "--tokens '20y' is not a positive count; write e.g. 200e6, 200M or 1.5B (or tokens per parameter, 100x)"),
        (["--plot", "/no/such/folder/x.png"], "folder '/no/such/folder' does not exist"),
        (["--plot", "PLOTDIR"], "must end in .png"),
        (["--family", "magic"], "'--family': 'magic' is not a family; one of"),
        (["--sort", "speed"], "cannot sort by 'speed'"),
        (["--law", "/no/such/law.toml"], "cannot read law file"),
        (["--draws", "1"], "draws = 1: need at least 2 Monte Carlo draws"),
        (["--draws=-3"], "draws = -3: need at least 2"),
        (["--draws", "10000000"], "draws = 10000000: at most"),
        (["--draws", "many"], "--draws 'many' is not a whole number"),
        (["--draws", "2.5"], "--draws '2.5' is not a whole number"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(run_cli, law_file, tmp_path, args, message):
    args = [str(tmp_path) if a == "PLOTDIR" else a for a in args]
    if "--law" not in args:
        args += ["--law", law_file]
    res = run_cli("rank", "int4", *args)
    assert res.code == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""


def test_cli_draws_and_vary_L(run_cli, law_file, law):
    res = run_cli("predict", "int4", "--law", law_file, "--draws", "500", "--vary-L", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"][0]
    # the CLI passes both through: its intervals are the API's with the same options
    api = predict("int4", law=law, draws=500, vary_L=True)
    assert (data["rho_low"], data["loss_high"]) == (api.rho_low, api.loss_high)
    held = predict("int4", law=law, draws=500)
    # this law's L is 1 +/- 0.7 (the paper's): drawing it widens the capacity interval a lot
    assert data["rho_high"] - data["rho_low"] > 2 * (held.rho_high - held.rho_low)
    res = run_cli("rank", "int4", "fp4", "--law", law_file, "--draws", "500", "--vary-L", "--json")
    assert res.code == 0, res.stderr
    ranked = {d["name"]: d for d in json.loads(res.stdout)["results"]}
    assert ranked["int4"]["rho_low"] == api.rho_low
    res = run_cli("predict", "int4", "--law", law_file, "--draws", "0")
    assert res.code == 2 and "need at least 2" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# Before joint draws the shipped law drew A, B independently from their bootstrap marginals
# conditional on the other constants (as the file stated them then). The point constants, as
# recalibrated since (QuEST's FourEight runs mapped to 2:4x2 with a whole-row int4 scale), with
# those conditional marginals as the file's provenance states them:
OLD_A = dict(value=15.449619473121272, sigma=0.0567, low=15.3, high=15.55)
OLD_B = dict(value=352.6290942753253, sigma=10.3, low=336.2, high=381.2)


@pytest.mark.skipif(not (laws_dir() / "paper-llama-c4.toml").is_file(), reason="shipped law not generated yet")
def test_shipped_law_int4_loss_interval_is_joint():
    from gmse_cli.law import Constant, shipped_law

    law = shipped_law()
    new = predict("int4", 200e6, 20e9)
    # the point value is the law's formula at the old constants (the point fit did not move)
    rho = 1.0 * math.tanh(0.41 * -math.log(new.gmse) / math.log(4)) ** 1.39
    point = OLD_A["value"] * (200e6 * rho) ** -0.13 + OLD_B["value"] * 20e9**-0.33 + 1.3
    assert new.rho == pytest.approx(rho, rel=1e-12)
    assert new.predicted_loss == pytest.approx(point, rel=1e-12)
    assert new.loss_low < new.predicted_loss < new.loss_high
    old_law = law.model_copy(update={
        "draws": None, "A": Constant(**OLD_A, provenance="old"), "B": Constant(**OLD_B, provenance="old")})
    old = predict("int4", 200e6, 20e9, old_law)
    assert old.predicted_loss == new.predicted_loss
    assert new.loss_high - new.loss_low < 0.2 * (old.loss_high - old.loss_low)
    # QuEST's nearest run (weights-only had128+int4 at 203M params, 20B tokens) lost 2.7557: the
    # rows were fitted to runs like it, so the joint interval holds it, a few hundredths from
    # the point.
    assert new.loss_low < 2.7557 < new.loss_high


def test_cli_bad_law_files(run_cli, tmp_path, law_file):
    text = open(law_file).read()
    negative = tmp_path / "negative.toml"
    negative.write_text(text.replace("[beta]\nvalue = 0.33", "[beta]\nvalue = -0.33"))
    res = run_cli("predict", "int4", "--law", str(negative))
    assert res.code == 2 and "beta = -0.33 must be positive" in res.stderr
    start = text.index("[A]")
    missing = tmp_path / "missing.toml"
    missing.write_text(text[:start] + text[text.index("[alpha]"):])
    res = run_cli("rank", "int4", "--law", str(missing))
    assert res.code == 2 and "A: missing" in res.stderr
    no_sparsity = tmp_path / "narrow.toml"
    no_sparsity.write_text(text[:text.index("[families.sparsity.L]")])
    res = run_cli("rank", "sparse-50", "--law", str(no_sparsity))
    assert res.code == 2 and "no capacity curve for family 'sparsity'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_cli_catalog_default_filtered(run_cli, tmp_path, law):
    narrow = paper_like_law(families={f: c for f, c in law.families.items() if f is not Family.VQ})
    path = tmp_path / "narrow.toml"
    save_law(narrow, path)
    res = run_cli("rank", "--family", "sparsity", "--law", str(path), "--json")
    assert res.code == 0, res.stderr
    expect = {name for name, fmt in catalog().items() if Family.SPARSITY in fmt.families}
    assert {d["name"] for d in json.loads(res.stdout)["results"]} == expect
    # catalog formats of a family the law lacks are skipped with a note, not an error
    assert "skipping" in res.stderr and "(vq)" in res.stderr


@pytest.mark.skipif(not (laws_dir() / "paper-llama-c4.toml").is_file(), reason="shipped law not generated yet")
def test_cli_uses_the_shipped_law_by_default(run_cli):
    res = run_cli("predict", "sparse-50", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)["results"][0]
    assert data["law"] == "paper-llama-c4"
    # the shipped sparsity curve is calibrated to the paper's capacity at 50% sparsity (.72)
    assert data["rho"] == pytest.approx(0.72, abs=0.02)


# --------------------------------------------------------------------------------------------
# Table widths: the default rank table in 120 columns, predict in 80, nothing folded or cut
# --------------------------------------------------------------------------------------------


def _rendered(tables) -> list[str]:
    """The lines the tables print (they never fold: the caller checks the widths)."""
    return [line for table in tables for line, _ in table.lines()]


def _assert_fits(lines: list[str], width: int, rows: int, names: list[str]) -> None:
    assert max(len(line) for line in lines) <= width
    assert not any("…" in line for line in lines)  # nothing cut with an ellipsis
    # one line per row: every name starts exactly one line's cells, and no row spills over
    for name in names:
        assert sum(f" {name} " in f" {line} " for line in lines) >= 1, name
    body = [line for line in lines if line.strip()]
    assert len(body) <= rows + 6, "\n".join(lines)  # title, header, rule and the rows; no folding


@pytest.mark.parametrize("act", [None, "int8"])
def test_rank_table_fits_120_columns(act):
    from gmse_cli.cli.rank import rank_table

    rows = rank(list(catalog().values()), act=act)
    lines = _rendered([rank_table(rows)])
    # with one activation format (named in the title) a row shows its weight format
    names = [r.name.removeprefix("W:").removesuffix(f" A:{act}") if act else r.name for r in rows]
    _assert_fits(lines, 120, len(rows), names)
    assert act is None or f"activations {act}" in "\n".join(lines[:3])
    top = "\n".join(lines[:6])  # the title and the (two-line) header
    for column in ("format", "bits/", "param", "GMSE", "rho [95%]", "loss -", "bf16", "memory", "to match", "method"):
        assert column in top, column
    wide = _rendered([rank_table(rows, wide=True)])
    assert "N*rho" in "\n".join(wide) and "eff. bits" in "\n".join(wide)


@pytest.mark.parametrize("name, act", [("int4", None), ("sparse-50+int4", "int8"), ("had128+int4", "nvfp4")])
def test_predict_fits_80_columns(name, act):
    from gmse_cli.cli.rank import prediction_tables
    from gmse_cli.law import load_law

    pred = predict(name, act=act)
    lines = _rendered(prediction_tables(pred, load_law(None)))
    assert max(len(line) for line in lines) <= 80
    assert not any("…" in line for line in lines)
    for s in pred.stages:  # every stage name whole, on one line
        assert any(s.name in line for line in lines), s.name


def test_cli_says_which_method_gave_each_gmse(run_cli):
    data = json.loads(run_cli("rank", "int4", "nvfp4", "lm3-g256", "--json").stdout)["results"]
    methods = {d["name"]: d["gmse_method"] for d in data}
    assert methods["int4"] == methods["nvfp4"] == "table" and methods["lm3-g256"] in ("monte-carlo", "cache")
    again = json.loads(run_cli("rank", "lm3-g256", "--json").stdout)["results"][0]
    assert again["gmse_method"] == "cache" and again["gmse"] == next(d["gmse"] for d in data if d["name"] == "lm3-g256")
    fresh = json.loads(run_cli("predict", "2:4+int4", "--recompute", "--json").stdout)["results"][0]
    assert [s["gmse_method"] for s in fresh["stages"]] == ["exact", "exact"]
    assert fresh["gmse_method"] == "monte-carlo"
    shown = run_cli("rank", "int4", "lm3-g256").stdout
    assert "table" in shown and "cache" in shown
