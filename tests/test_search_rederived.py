"""`search_formats` re-derived by brute force on small search spaces.

Each space is enumerated here from its own description (grid x bits x scale rule x group x
scale format, each quantizer after each sparsity pattern), each candidate's bits taken from
``Format.bits_per_param`` and checked against the README's cost rule (element bits x density +
scale bits / group + N:M mask bits), its GMSE from ``estimate_gmse`` (one shared bank) and its
capacity from the paper's curve rho = L tanh(F log_{1/4} GMSE)^C with the shipped law's
constants, factorized over stages (each stage alone). The search must then report:

- the highest capacity at or below the budget (inclusive) as ``best``;
- a frontier in increasing bits whose members no candidate beats (fewer-or-equal bits and
  more capacity), each next member gaining at least ``min_gain`` relative capacity, with every
  brute-force Pareto point matched by a member at no more bits within ``min_gain``;
- for each reported format the API's bits exactly and the API's GMSE within the two
  estimates' sampling error (the search and the API draw separate banks).

Tolerances: two Monte Carlo estimates of one GMSE differ by their sampling error, so
capacities are compared with a margin of ``Z`` combined standard errors; the spaces are chosen
so that the optimum is separated from its runner-up by more than that, except where the test
says so.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from gmse_cli import estimate_gmse, parse_shorthand, shipped_law
from gmse_cli.search import SearchSpace, enumerate_candidates, search_formats
from gmse_cli.spec import ScaleFormat, ScaleRule

Z = 4.0
REL_ERR = 3e-3  # the search's default
BRUTE_REL_ERR = 2e-3
SCALE_BITS = {ScaleFormat.FP32: 32, ScaleFormat.BF16: 16, ScaleFormat.E8M0: 8}
TOKEN = {ScaleFormat.FP32: "sfp32", ScaleFormat.BF16: "sbf16", ScaleFormat.E8M0: "se8m0"}
RULE = {ScaleRule.RMS: "rms", ScaleRule.ABSMAX: "absmax", ScaleRule.MSE: "mse"}
SPARSITY_BITS = {"2:4": 16 * 0.5 + math.log2(6) / 4}  # bf16 kept values + log2(C(4,2))/4 mask bits
DENSITY = {"2:4": 0.5}


def law_rho(family: str, value: float) -> float:
    curve = shipped_law().families[family]
    bits = max(-math.log(value) / math.log(4.0), 0.0)
    return curve.L.value * math.tanh(curve.F.value * bits) ** curve.C.value


def _grid_names(space: SearchSpace) -> list[tuple[str, int]]:
    """(base shorthand, element bits) of every scalar grid the space describes."""
    out = []
    for grid in space.grids:
        for b in range(1, space.max_element_bits + 1):
            if grid == "int":
                out.append((f"int{b}", b))
            elif grid == "sint" and b >= 2:  # sint1 would hold only 0
                out.append((f"sint{b}", b))
            elif grid == "lloyd-max":
                out.append((f"lm{b}", b))
            elif grid == "fp" and b >= 3:  # e1m0 would be {0, +-1}, sint2's grid again
                for x in range(1, min(space.max_exponent_bits, b - 1) + 1):
                    out.append((f"e{x}m{b - 1 - x}", b))
    return out


def brute_force(space: SearchSpace, budget: float) -> dict[str, dict]:
    """Every candidate at or below ``budget`` with its bits, stage GMSEs and capacity."""
    return {k: v for k, v in _every_candidate(space).items() if v["bits"] <= budget}


@functools.cache
def _every_candidate(space: SearchSpace) -> dict[str, dict]:
    quantizers = {}
    for base, b in _grid_names(space):
        for rule in space.scale_rules:
            for group in space.groups:
                g = 4096 if group == "row" else group
                gtok = "row" if group == "row" else f"g{group}"
                for sf in space.scale_formats:
                    name = f"{base}-{RULE[rule]}-{gtok}-{TOKEN[sf]}"
                    quantizers[name] = (b, SCALE_BITS[sf] / g)
    est = {e.name: e for e in estimate_gmse(list(quantizers) + list(space.sparsity), rel_err=BRUTE_REL_ERR, seed=5)}
    out = {}
    for name, (b, scale_bits) in quantizers.items():
        bits = parse_shorthand(name).bits_per_param(4096)
        assert bits == pytest.approx(b + scale_bits, abs=1e-12), name
        e = est[parse_shorthand(name).display_name]
        out[name] = {"bits": bits, "stages": [("quantization", e)]}
        for sp in space.sparsity:
            composite = f"{sp}+{name}"
            cbits = parse_shorthand(composite).bits_per_param(4096)
            # scales count per group of positions, kept or pruned; mask bits as for N:M alone
            expected = b * DENSITY[sp] + scale_bits + (SPARSITY_BITS[sp] - 16 * DENSITY[sp])
            assert cbits == pytest.approx(expected, abs=1e-12), composite
            out[composite] = {"bits": cbits, "stages": [("sparsity", est[sp]), ("quantization", e)]}
    for v in out.values():
        _add_rho(v)
    return out


def _add_rho(v: dict) -> None:
    """rho from the stages, and its standard error from each stage's GMSE error (a central
    difference per stage)."""
    v["rho"] = _rho(v["stages"])
    v["rho_se"] = math.sqrt(sum(((_rho(v["stages"], i, e.std_err) - _rho(v["stages"], i, -e.std_err)) / 2) ** 2
                                for i, (_, e) in enumerate(v["stages"])))


def _rho(stages, shifted: int = -1, by: float = 0.0) -> float:
    """prod of the stage curves at each stage's GMSE (stage ``shifted`` moved ``by``)."""
    return math.prod(law_rho(f, max(e.gmse + (by if i == shifted else 0.0), 1e-300)) for i, (f, e) in enumerate(stages))


def _margin(a: dict, b_se: float = 0.0) -> float:
    return Z * math.hypot(a["rho_se"], b_se) + 1e-12


def _pareto(points: dict[str, dict]) -> list[str]:
    """Names no other point beats (fewer-or-equal bits, more-or-equal rho, one strictly)."""
    names = []
    for n, p in points.items():
        if not any((q["bits"] <= p["bits"] and q["rho"] >= p["rho"]) and (q["bits"] < p["bits"] or q["rho"] > p["rho"])
                   for m, q in points.items() if m != n):
            names.append(n)
    return sorted(names, key=lambda n: points[n]["bits"])


def _check(result, space: SearchSpace, truth: dict[str, dict], budget: float, min_gain: float) -> None:
    names = {c.name for c in enumerate_candidates(budget, space=space)}
    assert names == set(truth), (sorted(names - set(truth)), sorted(set(truth) - names))
    assert result.candidates == len(truth)
    # every reported point: the API's bits exactly; rho from its stages by the law
    for p in (result.best, *result.frontier):
        assert p.name in truth, p.name
        t = truth[p.name]
        assert p.bits_per_param == pytest.approx(t["bits"], abs=1e-12), p.name
        assert p.rho == pytest.approx(math.prod(law_rho(s.family, s.gmse) for s in p.stages), rel=1e-9), p.name
        for s, (family, e) in zip(p.stages, t["stages"], strict=True):
            assert s.family == family
            assert abs(s.gmse - e.gmse) <= Z * math.hypot(s.std_err, e.std_err) + 1e-12, (p.name, s.gmse, e.gmse)
        assert abs(p.rho - t["rho"]) <= _margin(t, p.rho_std_err), (p.name, p.rho, t["rho"])
    # the best: within the budget (inclusive) and no candidate beats it beyond sampling error
    best = truth[result.best.name]
    assert best["bits"] <= budget
    top = max(truth, key=lambda n: truth[n]["rho"])
    assert best["rho"] >= truth[top]["rho"] - _margin(truth[top], best["rho_se"]), (result.best.name, top)
    # the frontier: increasing bits, each member gaining min_gain, none beaten, every Pareto
    # point of the brute force matched by a member at no more bits within min_gain
    front = list(result.frontier)
    assert result.best.name in {p.name for p in front}
    assert [p.bits_per_param for p in front] == sorted(p.bits_per_param for p in front)
    for prev, nxt in zip(front, front[1:], strict=False):
        assert nxt.rho > prev.rho
        assert nxt.rho >= prev.rho * (1 + min_gain) or nxt.name == result.best.name, (prev.name, nxt.name)
    for p in front:
        t = truth[p.name]
        for n, q in truth.items():
            if q["bits"] <= t["bits"]:
                assert q["rho"] <= t["rho"] + _margin(q, t["rho_se"]), (n, "beats frontier member", p.name)
    for n in _pareto(truth):
        q = truth[n]
        assert any(
            p.bits_per_param <= q["bits"] and p.rho >= q["rho"] / (1 + min_gain) - _margin(q, p.rho_std_err)
            for p in front
        ), n


def _search(budget: float, space: SearchSpace, **kw):
    return search_formats(budget, space=space, rel_err=REL_ERR, seed=0, **kw)


# one grid, one rule, one group, one scale format: capacity rises with bits, so the best is
# the widest integer that fits, and the budget is inclusive
LADDER = SearchSpace(
    grids=("sint",), max_element_bits=8, scale_rules=(ScaleRule.ABSMAX,), groups=(128,),
    scale_formats=(ScaleFormat.FP32,), sparsity=(), vq_dims=(), include_catalog=False,
)


@pytest.mark.parametrize(("budget", "best"), [
    (4.25, "sint4-absmax-g128-sfp32"),  # exactly at the budget: included
    (4.2499, "sint3-absmax-g128-sfp32"),
    (8.25, "sint8-absmax-g128-sfp32"),
    (2.25, "sint2-absmax-g128-sfp32"),
])
def test_budget_is_inclusive(budget, best):
    truth = brute_force(LADDER, budget)
    result = _search(budget, LADDER)
    assert result.best.name == best
    _check(result, LADDER, truth, budget, min_gain=5e-3)


def test_budget_below_every_candidate_is_refused():
    from gmse_cli.errors import SpecError

    with pytest.raises(SpecError, match="below every format"):
        search_formats(2.2, space=LADDER)


MIXED = SearchSpace(
    grids=("int", "sint", "fp", "lloyd-max"), max_element_bits=4, max_exponent_bits=2,
    scale_rules=(ScaleRule.RMS, ScaleRule.ABSMAX), groups=("row", 128),
    scale_formats=(ScaleFormat.FP32, ScaleFormat.BF16, ScaleFormat.E8M0), sparsity=("2:4",),
    vq_dims=(), include_catalog=False,
)


@pytest.mark.parametrize("budget", [1.8, 3.5, 4.25])
def test_mixed_space_optimum_and_frontier(budget):
    """Grids, rules, groups, scale formats and 2:4 composites: the reported best and frontier
    agree with the brute force, whatever the search pruned by its bounds."""
    truth = brute_force(MIXED, budget)
    result = _search(budget, MIXED)
    _check(result, MIXED, truth, budget, min_gain=5e-3)


def test_unthinned_frontier_is_the_brute_force_pareto_set():
    """With min_gain = 0 the frontier is the Pareto set itself, up to near-ties in capacity."""
    budget = 3.5
    truth = brute_force(MIXED, budget)
    result = _search(budget, MIXED, min_gain=0.0)
    _check(result, MIXED, truth, budget, min_gain=0.0)
    reported = {p.name for p in result.frontier}
    for n in _pareto(truth):
        q = truth[n]
        # a Pareto point missing from the report must be a near-tie with a reported member
        assert n in reported or any(
            p.bits_per_param <= q["bits"] and p.rho >= q["rho"] - _margin(q, p.rho_std_err) for p in result.frontier
        ), n


# the catalog formats at or below 4.25 bits that have more than one lossy stage, or a rotation,
# by their stages alone (a rotation leaves GMSE unchanged)
CATALOG_STAGES = {
    "2:4+int4": [("sparsity", "2:4"), ("quantization", "int4")],
    "sparse-50+int4": [("sparsity", "sparse-50"), ("quantization", "int4")],
    "had128+int4": [("quantization", "int4")],
    "had128+2:4x2+int4-allstats": [("sparsity", "2:4x2"), ("quantization", "int4")],
}


def _catalog_truth(names: list[str]) -> dict[str, dict]:
    stages = {
        n: CATALOG_STAGES.get(n) or [("vq" if n.startswith(("vq", "e8p")) else
                                      "sparsity" if n.startswith("sparse") else "quantization", n)]
        for n in names
    }
    needed = sorted({s for parts in stages.values() for _, s in parts})
    est = {e.name: e for e in estimate_gmse(needed, rel_err=BRUTE_REL_ERR, seed=5)}
    out = {}
    for n, parts in stages.items():
        v = {"bits": parse_shorthand(n).bits_per_param(4096), "stages": [(f, est[s]) for f, s in parts]}
        _add_rho(v)
        out[n] = v
    return out


def test_catalog_comparisons_rederived():
    """With the catalog in the space: the best and frontier over searched and catalog formats
    alike, and each catalog format compared with the best candidate at the same or fewer bits."""
    budget = 4.25
    space = LADDER.model_copy(update={"include_catalog": True})
    catalog = [c.name for c in enumerate_candidates(budget, space=space) if c.source == "catalog"]
    truth = {**brute_force(LADDER, budget), **_catalog_truth(catalog)}
    result = _search(budget, space)
    _check(result, space, truth, budget, min_gain=5e-3)
    assert sorted(c.catalog for c in result.comparisons) == sorted(catalog)
    for c in result.comparisons:
        t = truth[c.catalog]
        assert c.catalog_bits == pytest.approx(t["bits"], abs=1e-12)
        assert abs(c.catalog_rho - t["rho"]) <= _margin(t), c.catalog
        within = {n: v for n, v in truth.items() if v["bits"] <= c.catalog_bits + 1e-12}
        top = max(within, key=lambda n: within[n]["rho"])
        b = truth[c.best]
        assert b["bits"] <= c.catalog_bits + 1e-12 and c.best_bits == pytest.approx(b["bits"], abs=1e-12)
        assert b["rho"] >= within[top]["rho"] - _margin(within[top], b["rho_se"]), (c.catalog, c.best, top)
        assert c.gain == pytest.approx(c.best_rho - c.catalog_rho, abs=1e-12)
        assert c.gain_relative == pytest.approx(c.best_rho / c.catalog_rho - 1, abs=1e-12)


def test_checkpoint_objective_is_the_real_weight_mse(tmp_path):
    """With --checkpoint the objective is the parameter-weighted real-weight MSE (every row,
    here: fewer rows than rows_per_layer) and 128-block Hadamard variants join the space."""
    from safetensors.numpy import save_file
    from test_mse_rederived import ref_hadamard, ref_int_absmax, rel_err

    rng = np.random.default_rng(3)
    tensors = {
        "a.q_proj.weight": rng.standard_t(3, (32, 256)).astype(np.float32),
        "a.up_proj.weight": rng.standard_normal((16, 128)).astype(np.float32),
    }
    save_file(tensors, str(tmp_path / "w.safetensors"))
    budget = 4.25
    result = search_formats(budget, space=LADDER, checkpoint=tmp_path / "w.safetensors", seed=0)
    assert result.objective == "checkpoint"

    def real_mse(bits: int, rotated: bool) -> float:
        total = 0.0
        for w in tensors.values():
            rows = w.astype(np.float64)
            if rotated:
                rows = ref_hadamard(rows)
            total += rows.size * rel_err(rows, ref_int_absmax(rows, bits, 128, np.float32))
        return total / sum(w.size for w in tensors.values())

    truth = {}
    for b in range(2, 9):
        for rotated in (False, True):
            name = f"{'had128+' if rotated else ''}sint{b}-absmax-g128-sfp32"
            bits = b + 32 / 128
            if bits <= budget:
                mse = real_mse(b, rotated)
                truth[name] = (bits, mse, law_rho("quantization", mse))
    assert result.candidates == len(truth)
    assert {n for n, *_ in result.points} == set(truth)
    for p in (result.best, *result.frontier):
        bits, mse, rho = truth[p.name]
        assert p.bits_per_param == pytest.approx(bits, abs=1e-12)
        assert p.gmse == pytest.approx(mse, rel=2e-5), p.name  # float32 compressors vs float64
        assert p.rho == pytest.approx(rho, rel=1e-4), p.name
    top = max(truth, key=lambda n: truth[n][2])
    assert result.best.name == top
    pareto = [n for n in truth if not any(
        o[0] <= truth[n][0] and o[2] > truth[n][2] for m, o in truth.items() if m != n)]
    assert {p.name for p in result.frontier} == set(pareto)


def test_equal_bits_tie_on_few_rows_keeps_the_better_format():
    """At row length 128, 1:4+lm3 with absmax and with MSE-searched row scales cost the same
    bits and measure identically on the cheap pass's 4 rows; thinning kept one format per bit
    cost, so the one listed second (mse) was dropped for good though it is the better: the
    frontier listed 1:4+lm3-absmax-row-se8m0 at every seed (below the best, which a tie with
    the best kept)."""
    space = SearchSpace(
        grids=("lloyd-max",), max_element_bits=4, scale_rules=(ScaleRule.ABSMAX, ScaleRule.MSE), groups=("row",),
        scale_formats=(ScaleFormat.E8M0,), sparsity=("1:4",), vq_dims=(), include_catalog=False,
    )
    bits = 0.25 * 3 + 8 / 128 + 0.5  # 1:4 (0.5 mask bits) of 3-bit values and an E8M0 scale per row
    absmax, mse = estimate_gmse(["lm3-absmax-row-se8m0", "lm3-mse-row-se8m0"], row_length=128, rel_err=1e-3, seed=5)
    # the premise, on an independent bank: the same sparsity stage, a clearly better quantizer
    assert absmax.gmse - mse.gmse > Z * math.hypot(absmax.std_err, mse.std_err)
    for seed in (0, 1):
        result = search_formats(2.0, space=space, seed=seed, row_length=128)
        at = [p for p in result.frontier if p.bits_per_param == bits]
        assert [p.name for p in at] == ["1:4+lm3-mse-row-se8m0"], seed


def test_a_tie_at_the_best_is_listed_once():
    """On rows of 32, 'row' and 'g32' groups are one format under two names: the same bits and
    capacity. Ties below the best were listed once, but the best was always appended, so the
    frontier ended on both spellings at the same bits."""
    space = SearchSpace(
        grids=("lloyd-max",), max_element_bits=3, scale_rules=(ScaleRule.MSE,), groups=("row", 32),
        scale_formats=(ScaleFormat.E8M0,), sparsity=("1:4",), vq_dims=(), include_catalog=False,
    )
    result = search_formats(1.5, space=space, row_length=32)
    bits = [p.bits_per_param for p in result.frontier]
    assert bits == sorted(set(bits))
    assert result.best.bits_per_param == 0.25 * 3 + 8 / 32 + 0.5  # 1:4 of 3-bit values, an E8M0 scale per 32
    assert result.best.name in ("1:4+lm3-mse-row-se8m0", "1:4+lm3-mse-g32-se8m0")
