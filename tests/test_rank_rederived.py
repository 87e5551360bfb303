"""`uscl rank` and `uscl predict` against a second implementation of the paper's formulas.

Everything expected here is computed in this file with numpy from the shipped law file (read
with tomllib, not with gmse_cli.law) and the formulas of paper.md and the README:

- effective bits = log_{1/4}(GMSE); a stage's capacity rho = L tanh(F log_{1/4} GMSE)^C with its
  family's curve (quantize -> quantization, sparsify -> sparsity, vq -> vq; rotate: none);
- a format's rho = the product of its stages' (and its activation format's) rho;
- loss = A (N rho)^-alpha + B D^-beta + E; the dense model is rho = 1; effective params N rho;
  params to match N / rho; memory to match N / rho * bits/param / 8 bytes;
- intervals: quantiles of the law's 300 joint draws (one whole row per draw), checked to
  sampling accuracy since uscl resamples 2000 rows;
- bits/param from each format's spec as `uscl formats show` prints it (README "Formats").

uscl is only the system under test, plus the source of each stage's GMSE (an input here).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.cli import main

LAW_FILE = Path(__file__).resolve().parents[1] / "gmse_cli" / "laws" / "paper-llama-c4.toml"
ROW = 4096  # the default --row-length: a `row` scale is amortized over it
REL = 1e-9
# (--params, --tokens) as typed, and the same N, D as numbers: the README's two examples, the
# default (100 tokens/param), the Python API example.
CASES = [
    ("200M", "20B", 200e6, 20e9),
    ("1.5B", "50x", 1.5e9, 75e9),
    ("200M", "100x", 200e6, 20e9),
    ("1e9", "1e11", 1e9, 1e11),
]
FAMILY_OF_KIND = {"quantize": "quantization", "sparsify": "sparsity", "vq": "vq"}
GEN_REL_ERR = "0.05"  # generated formats: Monte Carlo GMSE, loose (the GMSE is an input here)


def _cli(*args: str) -> dict | str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            if exc.code:
                raise ValueError(err.getvalue().strip()) from None
    text = out.getvalue()
    return json.loads(text) if "--json" in args else text


# -- the law, read independently --------------------------------------------------------------


@cache
def law() -> dict:
    with LAW_FILE.open("rb") as fh:
        raw = tomllib.load(fh)
    point = {k: raw[k]["value"] for k in ("A", "alpha", "B", "beta", "E")}
    curves = {f: tuple(raw["families"][f][k]["value"] for k in "LFC") for f in raw["families"]}
    cols = {k: np.asarray(v, dtype=float) for k, v in raw["draws"]["constants"].items()}
    n = len(cols["A"])
    # A curve constant without a column is held at its value (quantization L, see the file).
    drawn = {f: tuple(cols.get(f"{f}.{k}", np.full(n, curves[f][i])) for i, k in enumerate("LFC")) for f in curves}
    return {"point": point, "curves": curves, "draws": {k: cols[k] for k in point}, "drawn_curves": drawn}


def effective_bits(gmse):
    return -np.log(gmse) / np.log(4.0)


def curve_rho(gmse, curve):
    L, F, C = curve
    return L * np.tanh(F * effective_bits(gmse)) ** C


def loss(c: dict, n: float, d: float, rho):
    return c["A"] * (n * rho) ** -c["alpha"] + c["B"] * d ** -c["beta"] + c["E"]


# -- storage cost, from the spec (README "Formats") -------------------------------------------

SCALE_FORMAT_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "e8m0": 8, "e4m3": 8, "int8": 8,
                     "dq8": 8 + 32 / 256}  # dq8: 8-bit codes + an fp32 absmax per 256 groups
# A two-level scale's per-tensor second level (e4m3, int8) is amortized over the tensor: 0.


def element_bits(q: dict) -> float:
    if q["grid"] in ("int", "lloyd-max"):
        return q["bits"]
    if q["grid"] == "fp":
        return 1 + q["exponent_bits"] + q["mantissa_bits"]
    return math.log2(len(q["values"]))  # lut: an index into the levels


def scale_bits(q: dict, row: int) -> float:
    """Scale (and zero-point) bits per parameter: one scale per group of *positions* (the
    quantizer's groups are runs of g consecutive entries, whatever a sparsify stage kept)."""
    if q.get("scale") == "none" or q["group"] == "tensor":
        return 0.0
    group = row if q["group"] == "row" else q["group"]
    zero_point = element_bits(q) if q.get("int_style") == "asymmetric" else 0.0
    return (SCALE_FORMAT_BITS[q["scale_format"]] + zero_point) / group


def binary_entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def density_and_mask_bits(s: dict, row: int = ROW) -> tuple[float, float]:
    if s["pattern"] == "n:m":
        return s["n"] / s["m"], math.log2(math.comb(s["m"], s["n"])) / (s["m"] * s.get("block", 1))
    kept = 1.0 - s["sparsity"]
    if s.get("granularity", "row") == "row":  # a row keeps round-half-up(kept x its entries or blocks)
        units = row // s.get("block", 1)
        if s["pattern"] == "block":
            kept = (units - math.floor(s["sparsity"] * units + 0.5)) / units
        else:
            kept = math.floor(kept * units + 0.5) / units
    if s["pattern"] == "block":  # one mask bit-entropy per block of K entries
        return kept, binary_entropy(kept) / s["block"]
    return kept, binary_entropy(kept)


def bits_per_param(stages: list[dict], row: int = ROW) -> float:
    density, bits = 1.0, 0.0
    for s in stages:
        if s["kind"] == "sparsify":
            density, mask = density_and_mask_bits(s, row)
            bits += mask
    quant = [s for s in stages if s["kind"] in ("quantize", "vq")]
    if not quant:
        return bits + 16.0 * density  # kept values of a sparsity-only format: bf16
    (q,) = quant
    if q["kind"] == "vq":
        assert q["codebook_shared"]  # every codebook used here ships with the package
        return bits + density * q["bits"] + scale_bits(q, row)
    return bits + density * element_bits(q) + scale_bits(q, row)


@cache
def spec_stages(name: str) -> tuple:
    return tuple(tomllib.loads(_cli("formats", "show", name))["stages"])


# -- one format, recomputed -------------------------------------------------------------------


def expected_point(name: str, stages_json: list[dict], n: float, d: float, act: str | None = None,
                   row: int = ROW) -> dict:
    lw = law()
    stages = spec_stages(name)
    families = [FAMILY_OF_KIND[s["kind"]] for s in stages if s["kind"] != "rotate"]
    weights = [s for s in stages_json if s["tensor"] == "weights"]
    assert [s["family"] for s in weights] == families, name
    acts = [s for s in stages_json if s["tensor"] == "activations"]
    if act is not None:
        assert [s["family"] for s in acts] == [
            FAMILY_OF_KIND[s["kind"]] for s in spec_stages(act) if s["kind"] != "rotate"]
    stage_rhos = [curve_rho(s["gmse"], lw["curves"][s["family"]]) for s in stages_json]
    # The single-GMSE prediction: each tensor's whole-pipeline GMSE through its quantizer's
    # curve (the sparsity curve when sparsity is all there is), tensors multiplied.
    single = [next((f for f in ("vq", "quantization") if f in fams), "sparsity")
              for fams in ([s["family"] for s in weights], [s["family"] for s in acts]) if fams]
    rho = float(np.prod(stage_rhos))
    bits = bits_per_param(list(stages), row)
    c = lw["point"]
    predicted = loss(c, n, d, rho)
    return {
        "bits_per_param": bits,
        "stage_rho": stage_rhos,
        "single_curves": single,
        "stage_effective_bits": [effective_bits(s["gmse"]) for s in stages_json],
        "rho": rho,
        "effective_params": n * rho,
        "predicted_loss": predicted,
        "delta_loss_vs_bf16": predicted - loss(c, n, d, 1.0),
        "params_to_match": n / rho,
        "memory_to_match_bytes": n / rho * bits / 8,
        "params_term": c["A"] * (n * rho) ** -c["alpha"],
        "data_term": c["B"] * d ** -c["beta"],
    }


def assert_close(got, want, what):
    assert math.isclose(got, want, rel_tol=REL, abs_tol=1e-300), f"{what}: uscl {got!r}, rederived {want!r}"


def check_row(row: dict, want: dict, who: str) -> None:
    for key in ("bits_per_param", "rho", "effective_params", "predicted_loss", "params_to_match",
                "memory_to_match_bytes"):
        assert_close(row[key], want[key], f"{who} {key}")
    # a difference of two nearly equal losses: relative to the loss itself
    assert math.isclose(row["delta_loss_vs_bf16"], want["delta_loss_vs_bf16"],
                        rel_tol=REL, abs_tol=REL * want["predicted_loss"]), f"{who} delta_loss_vs_bf16"
    assert_close(row["effective_bits"], effective_bits(row["gmse"]), f"{who} effective_bits")
    gmses = [row["gmse"]] + ([row["act_gmse"]] if row["act_gmse"] is not None else [])
    single = np.prod([curve_rho(g, law()["curves"][f]) for g, f in zip(gmses, want["single_curves"], strict=True)])
    assert_close(row["rho_single_gmse"], float(single), f"{who} rho_single_gmse")
    assert row["rho_low"] <= row["rho"] <= row["rho_high"], who
    assert row["loss_low"] <= row["predicted_loss"] <= row["loss_high"], who


@cache
def predictions(name: str, params: str, tokens: str, rel_err: str | None = None) -> dict:
    extra = ("--rel-err", rel_err) if rel_err else ()
    return _cli("predict", name, "--params", params, "--tokens", tokens, *extra, "--json")["results"][0]


def catalog_names() -> list[str]:
    return [r["name"] for r in _cli("formats", "--json")["results"]]


def pareto_flags(rows: list[dict]) -> list[bool]:
    """Not dominated: no other format has at most its bits and at least its rho, one of them
    strictly. (The README's "both fewer bits and a higher rho" would also keep a format that
    another beats at equal bits, e.g. int4 beside vq2-b4; uscl drops it, as Pareto means.)"""

    def dominates(o, r):
        bo, br, ro, rr = o["bits_per_param"], r["bits_per_param"], o["rho"], r["rho"]
        return bo <= br and ro >= rr and (bo < br or ro > rr)

    return [not any(dominates(o, r) for o in rows) for r in rows]


def check_rank_and_predict(names: list[str], case, rel_err: str | None = None) -> None:
    params, tokens, n, d = case
    extra = ("--rel-err", rel_err) if rel_err else ()
    ranked = _cli("rank", *names, "--params", params, "--tokens", tokens, *extra, "--json")["results"]
    assert sorted(r["name"] for r in ranked) == sorted(names)
    for row in ranked:
        p = predictions(row["name"], params, tokens, rel_err)
        assert row["params"] == n and row["tokens"] == d
        want = expected_point(row["name"], p["stages"], n, d)
        check_row(row, want, f"rank {row['name']} {params} {tokens}")
        check_row(p, want, f"predict {row['name']} {params} {tokens}")
        for s, r, e in zip(p["stages"], want["stage_rho"], want["stage_effective_bits"], strict=True):
            assert_close(s["rho"], r, f"predict {row['name']} stage {s['name']} rho")
            assert_close(s["effective_bits"], e, f"predict {row['name']} stage {s['name']} effective_bits")
            assert s["rho_low"] <= s["rho"] <= s["rho_high"]
        for key in ("params_term", "data_term"):
            assert_close(p[key], want[key], f"predict {row['name']} {key}")
        assert_close(p["irreducible"], law()["point"]["E"], "irreducible")
        assert_close(p["dense_loss"], want["predicted_loss"] - want["delta_loss_vs_bf16"], "dense_loss")
    assert [r["pareto"] for r in ranked] == pareto_flags(ranked)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_catalog_format_matches_the_rederived_law(case):
    check_rank_and_predict(catalog_names(), case)


def test_catalog_bits_per_param_from_the_spec():
    got = {r["name"]: r["bits_per_param"] for r in _cli("formats", "--json")["results"]}
    for name, bits in got.items():
        assert_close(bits, bits_per_param(list(spec_stages(name))), f"formats {name} bits_per_param")


# -- intervals: quantiles of the law's joint draws --------------------------------------------


def draw_values(stages_json: list[dict], n: float, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lw = law()
    rho = np.prod([curve_rho(s["gmse"], lw["drawn_curves"][s["family"]]) for s in stages_json], axis=0)
    predicted = loss(lw["draws"], n, d, rho)
    return rho, predicted, predicted - loss(lw["draws"], n, d, 1.0)


def assert_quantile_interval(low, high, values, what, level=0.95):
    # uscl resamples 2000 of the 300 rows (plus, for Monte Carlo GMSEs, their interval):
    # its quantiles land within about +-1.5 percentile points of the rows' own.
    tail = (1 - level) / 2
    lo = np.quantile(values, [tail - 0.015, tail + 0.015])
    hi = np.quantile(values, [1 - tail - 0.015, 1 - tail + 0.015])
    assert lo[0] <= low <= lo[1], f"{what} low {low} not in {lo}"
    assert hi[0] <= high <= hi[1], f"{what} high {high} not in {hi}"


def test_intervals_are_quantiles_of_the_law_draws():
    params, tokens, n, d = CASES[0]
    for name in catalog_names():
        p = predictions(name, params, tokens)
        rho, predicted, delta = draw_values(p["stages"], n, d)
        assert_quantile_interval(p["rho_low"], p["rho_high"], rho, f"{name} rho")
        assert_quantile_interval(p["loss_low"], p["loss_high"], predicted, f"{name} loss")
        assert_quantile_interval(p["delta_loss_low"], p["delta_loss_high"], delta, f"{name} delta loss")
        for s in p["stages"]:
            r = curve_rho(s["gmse"], law()["drawn_curves"][s["family"]])
            assert_quantile_interval(s["rho_low"], s["rho_high"], r, f"{name} stage {s['name']} rho")


# -- weights x activations --------------------------------------------------------------------


@pytest.mark.parametrize("weights, act", [("int4", "int4"), ("2:4+int4", "int8"), ("nvfp4", "nvfp4"),
                                         ("vq4-b2", "fp8-e4m3"), ("2:4", "sparse-50")])
def test_weights_times_activations_multiply(weights, act):
    params, tokens, n, d = CASES[0]
    p = _cli("predict", weights, "--act", act, "--params", params, "--tokens", tokens, "--json")["results"][0]
    want = expected_point(weights, p["stages"], n, d, act=act)
    check_row(p, want, f"predict {weights} --act {act}")
    (row,) = [r for r in _cli("rank", weights, "--act", act, "--params", params, "--tokens", tokens, "--json")["results"]]
    check_row(row, want, f"rank {weights} --act {act}")
    assert p["act_gmse"] == next(s["gmse"] for s in p["stages"] if s["tensor"] == "activations")


# -- generated shorthand formats --------------------------------------------------------------

# The grammar of tests/test_gmse_backends.py::_generated_formats, drawn with a seeded rng.
_QUANT_BASES = [
    "int2", "int4", "sint3", "aint4", "fint4", "e2m1", "e3m2", "e4m3", "e5m2", "e1m0", "lm2", "lm3",
    "lut[-1,0,0.5,2]", "lut[-1.5,-0.25,0.75]", "nf4", "ternary", "mxfp4", "nvfp4", "mxint8", "bf16",
    "vq1-b2", "vq2-b2", "vq4-b1",
]
_MODIFIERS = [
    "g4", "g16", "g32", "row", "tensor", "absmax", "rms", "mse", "rms1.5", "sfp16", "sbf16", "se8m0",
    "se4m3", "sint8", "sdq8", "rceil", "nearest", "floor", "even", "inf", "saturate", "bnb",
]
_SPARSE = ["2:4", "1:4", "3:8", "2:4x2", "1:2x8", "sparse30", "sparse75", "block4-50", "block16-25"]
N_GENERATED = 30


def _candidate(rng: np.random.Generator) -> str:
    parts = []
    if rng.random() < 0.25:
        parts.append(str(rng.choice(["had2", "had16", "had64"])))
    if rng.random() < 0.5:
        parts.append(str(rng.choice(_SPARSE)))
    if not parts or rng.integers(0, 4):
        mods = [str(m) for m in rng.choice(_MODIFIERS, size=rng.integers(0, 4), replace=False)]
        if parts and parts[-1][0] != "h" and rng.random() < 0.5:
            mods.append("allstats")
        parts.append("-".join([str(rng.choice(_QUANT_BASES)), *mods]))
    return "+".join(parts)


@cache
def generated_formats() -> tuple[str, ...]:
    rng = np.random.default_rng(2506_01863)
    found: list[str] = []
    while len(found) < N_GENERATED:
        text = _candidate(rng)
        if text in found:
            continue
        try:
            spec_stages(text)
        except ValueError:  # a drawn combination that makes no valid format
            continue
        found.append(text)
    return tuple(found)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_generated_formats_match_the_rederived_law(case):
    check_rank_and_predict(list(generated_formats()), case, rel_err=GEN_REL_ERR)


@pytest.mark.parametrize("name", ["int4", "int4-g128", "2:4+int4", "sparse30+fint4-row-sbf16", "vq2-b2"])
def test_row_scales_are_amortized_over_the_row_length(name):
    # --row-length 1024: a `row` scale costs its bits / 1024 per parameter
    params, tokens, n, d = CASES[0]
    args = ("--params", params, "--tokens", tokens, "--row-length", "1024", "--rel-err", GEN_REL_ERR, "--json")
    p = _cli("predict", name, *args)["results"][0]
    want = expected_point(name, p["stages"], n, d, row=1024)
    check_row(p, want, f"predict {name} --row-length 1024")
    (row,) = _cli("rank", name, *args)["results"]
    check_row(row, want, f"rank {name} --row-length 1024")
