"""What a fit must not depend on: the order of the runs, their file form, the scheme labels,
the unit a file declares D in, duplicated data, runs that lie on the fitted law, thread counts,
and how a selection was made. Each property is checked on ``uscl fit --json``'s output for
runs generated here from a known law; the held-out figures are re-derived from the JSON's own
per-run residuals.

Tolerances: a fit's optimum is found by L-BFGS polished with scipy (ftol 1e-15), so a fit of
the same runs in another order (other floating-point sums) lands within ~1e-7 relative on every
constant; a bootstrap replicate is refitted by batched L-BFGS alone, so its intervals agree to
~1e-4. Anything that reads the same numbers the same way is compared exactly.

Most fits here go through :func:`gmse_cli.fit.fit` (what ``uscl fit`` calls; its JSON is the
result's ``model_dump``) without the profile intervals of alpha and E, which take three
quarters of a fit's time; the selections and the thread counts go through the command line,
with alpha and E held so that no profile runs there either.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LAW = {"A": 300.0, "alpha": 0.3, "B": 1000.0, "beta": 0.3, "E": 1.7, "F": 0.7, "C": 1.3}
# Stage GMSEs to draw the losses from (any values near the catalog's do: the fit reads its own).
GMSE = {"bf16": 2.76e-6, "int2": 0.1188, "int3": 0.03744, "int4": 0.01154, "int8": 8.78e-5}
SIZES = (2e7, 5e7, 1.5e8, 5e8)
TPPS = (10.0, 30.0, 100.0)
CONSTANTS = ("A", "alpha", "B", "beta", "E", "quantization.F", "quantization.C")


def law_loss(n: float, d: float, gmse: float) -> float:
    rho = math.tanh(LAW["F"] * -math.log(gmse) / math.log(4.0)) ** LAW["C"]
    return LAW["A"] * (n * rho) ** -LAW["alpha"] + LAW["B"] * d ** -LAW["beta"] + LAW["E"]


def generated_runs(seed: int = 1, noise: float = 2e-3) -> list[dict]:
    """Weight-only runs of five schemes on a 4 x 3 grid of (N, D/N), 0.2% log-normal noise."""
    rng = np.random.default_rng(seed)
    return [{"weights": w, "N": n, "D": n * t, "loss": law_loss(n, n * t, g) * math.exp(noise * rng.standard_normal())}
            for w, g in GMSE.items() for n in SIZES for t in TPPS]


def write(rows: list[dict], path: Path) -> Path:
    """JSON lines, a JSON list or a CSV, by the path's suffix."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(rows[0]))
            out.writeheader()
            out.writerows(rows)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fit_json(path: Path, model: str = "unified", **options) -> dict:
    """``uscl fit PATH --model MODEL --json``'s result, without the profile intervals; no held-out
    refits unless ``loso=True``."""
    from gmse_cli.cli.output import envelope
    from gmse_cli.fit import fit
    from gmse_cli.runs import load_runs

    options.setdefault("loso", False)
    result = fit(load_runs(path), model=model, profile=False, data_files=[str(path)], **options)
    return json.loads(json.dumps(envelope("fit", [result.model_dump(mode="json")])))["results"][0]


@pytest.fixture
def cli_fit_json(run_cli):
    def fit(*args: str) -> dict:
        res = run_cli("fit", *map(str, args), "--json")
        assert res.code == 0, res.stderr
        return json.loads(res.stdout)["results"][0]

    return fit


def by_run(result: dict) -> dict:
    """Each run's row keyed by what the run is (not where its file put it)."""
    return {(r["N"], r["D"], r["loss"]): r for r in result["residuals"]}


def intervals(result: dict) -> dict[str, tuple]:
    out = {k: (c["value_low"], c["value_high"], c["sigma"]) for k, c in result["constants"].items() if not c["fixed"]}
    out |= {f"rho {c['scheme']}": (c["rho_low"], c["rho_high"], c["sigma"]) for c in result["capacities"]
            if not c["reference"]}
    return out


def without_names(result: dict, rename: dict[str, str]) -> str:
    """The result with scheme labels mapped back and the input file's name dropped."""
    text = json.dumps({k: v for k, v in result.items() if k not in ("data_files", "fitted_range")}, sort_keys=True)
    for new, old in rename.items():
        text = text.replace(json.dumps(new), json.dumps(old))
    return text


# -- run order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["decoupled", "unified"])
def test_shuffled_runs_give_the_same_fit_and_the_same_bootstrap(tmp_path, model):
    """Regression: the bootstrap resampled each scheme's runs in file order (and the schemes in
    order of first appearance), so reordering a runs file redrew every replicate with the same
    seed: in a decoupled fit of these runs with 12 refits, A's bootstrap sigma went from 18.9 to
    6.9 and its interval from [274.5, 347.5] to [289.1, 328.9]. The draws now follow the runs'
    own values."""
    rows = generated_runs()
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    a = fit_json(write(rows, tmp_path / "runs.jsonl"), model, bootstrap=12, seed=3)
    b = fit_json(write(shuffled, tmp_path / "shuffled.jsonl"), model, bootstrap=12, seed=3)
    for k in CONSTANTS if model == "unified" else CONSTANTS[:5]:
        assert b["constants"][k]["value"] == pytest.approx(a["constants"][k]["value"], rel=1e-6), k
    assert b["objective"] == pytest.approx(a["objective"], rel=1e-9)
    ra, rb = by_run(a), by_run(b)
    assert ra.keys() == rb.keys()
    for key, row in ra.items():
        assert rb[key]["residual"] == pytest.approx(row["residual"], abs=1e-8)
    ia, ib = intervals(a), intervals(b)
    assert ia.keys() == ib.keys() and len(ia) >= 5
    for k, ends in ia.items():
        assert all(v is not None for v in ends), k
        assert ib[k] == pytest.approx(ends, rel=1e-3), k


def test_bootstrap_draws_follow_the_given_order():
    """Within-scheme resampling counts: the same rng and the same order-by-value give the same
    counts per run, whatever the order of the runs array."""
    from gmse_cli.fit.resampling import bootstrap_weights

    groups = np.array([0, 0, 1, 1, 1, 0, 2, 1])
    values = np.array([5.0, 1.0, 3.0, 7.0, 2.0, 4.0, 6.0, 8.0])  # what each run is
    perm = np.array([3, 7, 0, 6, 2, 5, 1, 4])
    # renumber the groups by first appearance in the permuted order, as a fit does
    relabel = {g: i for i, g in enumerate(dict.fromkeys(groups[perm]))}
    w = bootstrap_weights(groups, 50, np.random.default_rng(9), np.argsort(values, kind="stable"))
    wp = bootstrap_weights(np.array([relabel[g] for g in groups[perm]]), 50, np.random.default_rng(9),
                           np.argsort(values[perm], kind="stable"))
    assert np.array_equal(wp, w[:, perm])
    for g in range(3):  # every replicate keeps each group's size
        assert np.all(w[:, groups == g].sum(axis=1) == np.sum(groups == g))


# -- file forms, labels, units ------------------------------------------------------------------


def test_forms_labels_and_declared_units_change_nothing_but_names(tmp_path):
    """JSON lines, a JSON list, a CSV, a CSV giving D as training FLOP (D = FLOP / 6N), numbers
    written as strings under other accepted keys, and renamed schemes: the same fit, bit for bit
    (the scheme names aside), the bootstrap included."""
    rows = generated_runs(seed=2)[::2]
    base = fit_json(write(rows, tmp_path / "runs.jsonl"), bootstrap=4)
    rename = {w: f"label {i} of {w[::-1]}" for i, w in enumerate(GMSE)}
    variants = {
        "list": (write(rows, tmp_path / "runs.json"), {}),
        "flop": (write([{"weights": r["weights"], "N": r["N"], "Training FLOP": 6.0 * r["N"] * r["D"],
                         "loss": r["loss"]} for r in rows], tmp_path / "flop.csv"), {}),
        "strings": (write([{"weights": r["weights"], "params": repr(r["N"]), "tokens": repr(r["D"]),
                            "val_loss": repr(r["loss"])} for r in rows], tmp_path / "strings.jsonl"), {}),
        "renamed": (write([r | {"scheme_name": rename[r["weights"]]} for r in rows], tmp_path / "named.jsonl"),
                    {v: k for k, v in rename.items()}),
        "renamed csv": (write([r | {"scheme": rename[r["weights"]]} for r in rows], tmp_path / "named.csv"),
                        {v: k for k, v in rename.items()}),
    }
    assert all(6.0 * r["N"] * r["D"] / (6.0 * r["N"]) == r["D"] for r in rows)  # FLOP round-trips exactly here
    expected = without_names(base, {})
    for name, (path, back) in variants.items():
        got = fit_json(path, bootstrap=4)
        if back:
            assert {c["scheme"] for c in got["capacities"]} == set(back)
        assert without_names(got, back) == expected, name


def test_the_decoupled_reference_is_the_bf16_format_whatever_its_label(tmp_path):
    """Regression: a decoupled fit pinned rho = 1 on the scheme *labelled* 'bf16', else on the
    dense scheme with the most runs; relabelling the bf16 runs 'baseline' beside a larger fp32
    scheme moved the reference to fp32 and every capacity by 3% (here int2 0.727 -> 0.748, int4
    0.971 -> 1.000). The reference is now chosen by the runs' weight format."""
    rows = [r for r in generated_runs(seed=8) if r["weights"] in ("bf16", "int2", "int3", "int4")]
    fp32 = [r | {"weights": "fp32", "loss": r["loss"] * 1.003} for r in rows if r["weights"] == "bf16"]
    fp32 += [{"weights": "fp32", "N": 1e9, "D": 1e9 * t, "loss": law_loss(1e9, 1e9 * t, GMSE["bf16"])} for t in TPPS]
    base = fit_json(write(rows + fp32, tmp_path / "runs.jsonl"), "decoupled")
    named = [r | {"scheme_name": "baseline"} if r["weights"] == "bf16" else r for r in rows]
    relabelled = fit_json(write(named + fp32, tmp_path / "named.jsonl"), "decoupled")
    assert [c["scheme"] for c in base["capacities"] if c["reference"]] == ["bf16"]
    assert [c["scheme"] for c in relabelled["capacities"] if c["reference"]] == ["baseline"]
    assert without_names(relabelled, {"baseline": "bf16"}) == without_names(base, {})


# -- duplicated data and --weigh-schemes ---------------------------------------------------------


def test_duplicates_keep_the_constants_and_weigh_schemes_counts_a_scheme_once(tmp_path):
    """Every run twice: the Huber objective doubles at the same constants. One scheme's runs
    twice under --weigh-schemes: each weighs half, so the same constants, and an objective
    scaled by (fitted runs) / (fitted runs before), the weights summing to the runs' number."""
    rows = generated_runs(seed=3)[::2]
    base = fit_json(write(rows, tmp_path / "runs.jsonl"))
    twice = fit_json(write(rows + rows, tmp_path / "twice.jsonl"))
    assert twice["n_runs"] == 2 * base["n_runs"]
    for k in CONSTANTS:
        assert twice["constants"][k]["value"] == pytest.approx(base["constants"][k]["value"], rel=1e-6), k
    assert twice["objective"] == pytest.approx(2 * base["objective"], rel=1e-9)
    assert twice["fit_error"] == pytest.approx(base["fit_error"], rel=1e-6)

    extra = [r for r in rows if r["weights"] == "int3"]
    weighed = fit_json(tmp_path / "runs.jsonl", weigh_schemes=True)
    skewed = fit_json(write(rows + extra, tmp_path / "skewed.jsonl"), weigh_schemes=True)
    for k in CONSTANTS:
        assert skewed["constants"][k]["value"] == pytest.approx(weighed["constants"][k]["value"], rel=1e-6), k
    ratio = (len(rows) + len(extra)) / len(rows)
    assert skewed["objective"] == pytest.approx(ratio * weighed["objective"], rel=1e-9)
    # and without the weights the doubled scheme does pull the fit
    plain = fit_json(tmp_path / "skewed.jsonl")
    assert plain["constants"]["quantization.F"]["value"] != pytest.approx(base["constants"]["quantization.F"]["value"],
                                                                           rel=1e-4)


# -- runs on the fitted law ---------------------------------------------------------------------


def test_runs_on_the_fitted_law_do_not_move_it(tmp_path):
    """A run whose loss is the fitted law's prediction has residual 0 and adds no gradient at the
    optimum: the refit with 10 such runs (new sizes and D/N) keeps every constant."""
    rows = generated_runs(seed=4)[::2]
    base = fit_json(write(rows, tmp_path / "runs.jsonl"))
    c = {k: base["constants"][k]["value"] for k in ("A", "alpha", "B", "beta", "E")}
    added = []
    for cap in base["capacities"]:
        for n, t in ((8e7, 45.0), (3e8, 15.0)):
            loss = c["A"] * (n * cap["rho"]) ** -c["alpha"] + c["B"] * (n * t) ** -c["beta"] + c["E"]
            added.append({"weights": cap["weights"], "N": n, "D": n * t, "loss": loss})
    more = fit_json(write(rows + added, tmp_path / "more.jsonl"))
    for k in CONSTANTS:
        assert more["constants"][k]["value"] == pytest.approx(base["constants"][k]["value"], rel=1e-6), k
    assert more["objective"] == pytest.approx(base["objective"], rel=1e-9)
    new = [r for r in more["residuals"] if (r["N"], r["D"]) in {(a["N"], a["D"]) for a in added}]
    assert len(new) == len(added) and max(abs(r["residual"]) for r in new) < 1e-7


# -- held-out figures re-derived -------------------------------------------------------------------


def test_pooled_and_per_scheme_heldout_figures_from_the_per_run_residuals(tmp_path):
    """heldout_scheme_rmse, heldout_group_rmse, heldout_scale_rmse and heldout_outside_rmse, and
    every table entry's RMSE and bias, recomputed from residuals[].heldout_*; the fit error and
    each residual from the predicted and observed losses."""
    rows = [r for r in generated_runs(seed=5) if r["weights"] != "int8" and r["D"] != 30.0 * r["N"]]
    # one scheme outside the law's domain (activations quantized without a rotation)
    rows += [{"weights": "int4", "activations": "int4", "N": n, "D": n * 20.0,
              "loss": law_loss(n, n * 20.0, GMSE["int4"]) * 1.01} for n in SIZES]
    result = fit_json(write(rows, tmp_path / "runs.jsonl"), loso=True)
    runs = result["residuals"]

    def rmse(values):
        return math.sqrt(sum(v * v for v in values) / len(values)) if values else None

    outside = {"W:int4 A:int4"}
    assert {r["scheme"] for r in runs if not r["fitted"]} == outside
    for split in ("scheme", "group", "scale"):
        table = result[f"heldout_{split}s"]
        key = f"heldout_{split}"
        for entry in table["entries"]:
            values = [r[key] for r in runs if r["scheme"] in entry["schemes"] and r[key] is not None]
            assert len(values) == entry["n_runs"], (split, entry["name"])
            assert entry["rmse"] == pytest.approx(rmse(values), rel=1e-12)
            assert entry["bias"] == pytest.approx(sum(values) / len(values), rel=1e-12, abs=1e-15)
        inside = [r[key] for r in runs if r[key] is not None and r["scheme"] not in outside]
        assert result[f"heldout_{split}_rmse"] == pytest.approx(rmse(inside), rel=1e-12)
    out = [r["heldout_scheme"] for r in runs if r["scheme"] in outside]
    assert len(out) == len(SIZES) and result["heldout_outside_rmse"] == pytest.approx(rmse(out), rel=1e-12)
    # a scheme outside the domain was never fitted: its scheme split is the full fit's residual
    assert all(r["heldout_scheme"] == r["residual"] for r in runs if r["scheme"] in outside)
    # the scale split holds out the largest third of the 4 sizes: the largest
    assert {r["N"] for r in runs if r["heldout_scale"] is not None} == {max(SIZES)}
    fitted = [r["residual"] for r in runs if r["fitted"]]
    assert result["fit_error"] == pytest.approx(rmse(fitted), rel=1e-12)
    for r in runs:
        assert r["residual"] == pytest.approx(math.log(r["predicted"]) - math.log(r["loss"]), abs=1e-13)


# -- selections ---------------------------------------------------------------------------------------


def test_where_exclude_worst_and_fix_fit_what_a_hand_filter_keeps(cli_fit_json, tmp_path):
    """--where (twice) then --exclude-worst on what they keep, with --fix and a bootstrap: the
    same JSON as the fit of a file holding only the runs a plain filter keeps."""
    rows = generated_runs(seed=6)
    kept = [r for r in rows if r["N"] >= 5e7 and r["weights"] != "int2"]
    cut = sorted(r["loss"] for r in kept)[-4]
    kept = [r for r in kept if r["loss"] < cut]
    args = ("--model", "unified", "--no-heldout", "--fix", "beta=0.3", "--fix", "alpha=0.3", "--fix", "E=1.7",
            "--bootstrap", "6")
    a = cli_fit_json(write(rows, tmp_path / "runs.jsonl"), *args, "--where", "N>=5e7", "--where", "scheme!=int2",
                 "--exclude-worst", "4")
    b = cli_fit_json(write(kept, tmp_path / "kept.jsonl"), *args)
    assert a["n_runs"] == len(kept) == 3 * 3 * 4 - 4
    assert a["constants"]["beta"] == b["constants"]["beta"] and a["constants"]["beta"]["value"] == 0.3
    assert without_names(a, {}) == without_names(b, {})


# -- threads and repeated runs ------------------------------------------------------------------------


def test_thread_counts_and_repeated_runs_give_identical_output(run_cli, tmp_path):
    """The same fit in this process, in a new one, and in one with NUMBA_NUM_THREADS=1 and
    OMP_NUM_THREADS=1: the same bytes on stdout (the fit's kernels are serial; numba's and
    BLAS's thread pools must not change the order of a sum)."""
    path = write(generated_runs(seed=7)[::2], tmp_path / "runs.jsonl")
    args = ["fit", str(path), "--model", "unified", "--no-heldout", "--bootstrap", "4", "--fix", "alpha=0.3",
            "--fix", "E=1.7", "--json"]
    here = run_cli(*args)
    assert here.code == 0, here.stderr
    base_env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base_env.get("PYTHONPATH")]))
    for extra in ({}, {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}):
        done = subprocess.run([sys.executable, "-m", "gmse_cli", *args], capture_output=True, text=True,
                              env=base_env | extra, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout == here.stdout, extra
    assert json.loads(here.stdout)["results"][0]["n_runs"] == 30
