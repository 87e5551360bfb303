"""The seams between commands in the workflow a user follows: write a format of one's own, take
its GMSE, rank and predict it, plan a sweep with it, fit the runs, use the fitted law in rank and
predict, measure real weights. A number that crosses a seam must be the same number, under the
same key and the same name, in --json and --csv alike; expected values here come from the README's
formulas or from the files the commands wrote (the law file's constants), never from the command
under test alone."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from output_contract import RETIRED_KEYS, checked_output

jsonschema = pytest.importorskip("jsonschema")

# Renamed by the user: int4-g128's spec with groups of 16 and bf16 scales. Groups of 16 fit every
# tiny preset's input dimension (48 ... 256).
MY_FORMAT = """\
name = "myint4-g16"
description = "int4-g128 with groups of 16 and bf16 scales"

[[stages]]
kind = "quantize"
grid = "int"
bits = 4
int_style = "signed"
scale = "absmax"
group = 16
scale_format = "bf16"
"""
# The README's bits rule: 4 element bits + one 16-bit scale per group of 16.
MY_BITS = 4 + 16 / 16
_OLD_KEYS = RETIRED_KEYS | {"method"}


@pytest.fixture(scope="module")
def validator():
    from gmse_cli.schema import output_schema

    return jsonschema.Draft202012Validator(output_schema())


@pytest.fixture
def my_format(tmp_path) -> Path:
    path = tmp_path / "my.toml"
    path.write_text(MY_FORMAT)
    return path


def _json(run_cli, validator, *args) -> dict:
    return checked_output(validator, run_cli(*args, "--json"), _OLD_KEYS)


def _csv(run_cli, *args) -> list[dict]:
    res = run_cli(*args, "--csv")
    assert res.code == 0, res.stderr
    return list(csv.DictReader(io.StringIO(res.stdout)))


def _flat(item: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in item.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, list):
            out[prefix + k] = v
    return out


def _same_cell(value, cell: str) -> bool:
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == str(value)
    if isinstance(value, int | float):
        return cell != "" and float(cell) == float(value)
    return cell == str(value)


def _csv_matches_json(rows: list[dict], results: list[dict]) -> None:
    assert len(rows) == len(results)
    for row, item in zip(rows, results, strict=True):
        flat = _flat(item)
        assert set(flat) <= set(row), set(flat) - set(row)
        bad = {k: (flat[k], row[k]) for k in flat if not _same_cell(flat[k], row[k])}
        assert not bad, bad


def _bf16(x):
    """float32 -> bf16 -> float32, round to nearest even (how a bf16 scale is stored)."""
    import numpy as np

    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def _my_format_gmse_by_hand(rows: int = 4096, length: int = 256) -> float:
    """Signed int4 (-7 ... 7), absmax scale amax / 7 per group of 16 stored in bf16, on N(0, 1)."""
    import numpy as np

    x = np.random.default_rng(7).standard_normal((rows * length // 16, 16)).astype(np.float32)
    scale = _bf16(np.abs(x).max(axis=1, keepdims=True) / 7)
    q = np.clip(np.round(x / scale), -7, 7) * scale
    return float(np.mean((q - x) ** 2))


def test_a_format_of_ones_own_is_one_number_under_one_name_in_every_command(run_cli, validator, my_format, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    gmse = _json(run_cli, validator, "gmse", str(my_format))["results"][0]
    assert gmse["name"] == "myint4-g16" and gmse["bits_per_param"] == MY_BITS
    # An independent Monte Carlo of the same quantizer (1M entries: standard error ~0.15%).
    assert gmse["gmse"] == pytest.approx(_my_format_gmse_by_hand(), rel=0.01)
    assert gmse["effective_bits"] == pytest.approx(-math.log(gmse["gmse"]) / math.log(4), rel=1e-12)

    law = {k: v["value"] for k, v in _shipped_law().items() if k in ("A", "alpha", "B", "beta", "E")}
    L, F, C = (_shipped_law()["families"]["quantization"][k]["value"] for k in ("L", "F", "C"))
    rho = L * math.tanh(F * gmse["effective_bits"]) ** C
    for command in ("rank", "predict"):
        item = _json(run_cli, validator, command, str(my_format))["results"][0]
        assert item["name"] == "myint4-g16" and item["bits_per_param"] == MY_BITS
        assert item["gmse"] == gmse["gmse"] and item["gmse_method"] == "cache"
        assert item["rho"] == pytest.approx(rho, rel=1e-12)
        N, D = item["params"], item["tokens"]
        loss = law["A"] * (N * rho) ** -law["alpha"] + law["B"] * D ** -law["beta"] + law["E"]
        assert item["predicted_loss"] == pytest.approx(loss, rel=1e-12)
        assert item["effective_params"] == pytest.approx(N * rho, rel=1e-12)

    # Real weights drawn from N(0, 1): per-layer GMSE at the layer's own row length (256) agrees
    # with the GMSE at 4096 for a group-of-16 format (groups never straddle rows).
    weights = tmp_path / "w.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)},
              str(weights))
    item = _json(run_cli, validator, "mse", str(weights), "-f", str(my_format))["results"][0]
    assert item["name"] == "myint4-g16" and item["bits_per_param"] == MY_BITS
    assert item["gmse"] == pytest.approx(gmse["gmse"], rel=0.01)
    assert item["rho_gmse"] == pytest.approx(L * math.tanh(F * -math.log(item["gmse"]) / math.log(4)) ** C, rel=1e-12)


def _shipped_law() -> dict:
    import tomllib

    from gmse_cli.paths import laws_dir

    return tomllib.loads((laws_dir() / "paper-llama-c4.toml").read_text())


def _record(plan: dict, gmse: dict, spec: dict, loss: float) -> dict:
    """A results line as uscl train writes it, for a run the dry run planned (no training)."""
    stage = {"family": "quantization", "name": "myint4-g16[quantize]", "gmse": gmse["gmse"],
             "ci_low": gmse["gmse_low"], "ci_high": gmse["gmse_high"], "method": "monte-carlo"}
    return {
        "schema_version": 1, "run_key": plan["run_key"], "name": plan["name"], "status": "ok",
        "weights": "myint4-g16", "weights_spec": spec, "activations": None, "activations_spec": None,
        "stage_gmse": {"weights": [stage]}, "format_gmse": {"weights": gmse["gmse"]},
        "params": plan["params"], "tokens": plan["tokens"], "tokens_per_param": plan["tokens"] / plan["params"],
        "val_loss": loss, "val_tokens": 1024,
        "loss_curve": {"steps": [1], "train_loss": [loss], "final_train_loss": loss, "min_train_loss": loss},
        "model": {"preset": "tiny-50k", "layers": 2, "heads": 4, "d_model": 48, "ffn_dim": 128, "vocab_size": 300,
                  "context": 128, "non_embedding_params": plan["params"], "embedding_params": 28800},
        "training": {"steps": plan["steps"], "tokens_per_step": plan["tokens_per_step"], "batch_size": 32, "lr": 1e-3,
                     "warmup_steps": 0, "min_lr_ratio": 0.1, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1,
                     "grad_clip": 1.0, "trust": True, "rbbm_p": None, "precision": "fp32", "world_size": 1,
                     "parallel": "none"},
        "data": {"source": "text.txt", "sha256": "0" * 64, "train_tokens": 1, "val_tokens": 1, "val_fraction": 0.02},
        "tokenizer": {"source": "bpe:300", "sha256": "0" * 64, "vocab_size": 300},
        "seed": 0, "device": "cpu", "wall_time_s": 1.0, "uscl_version": "0", "torch_version": "0",
        "finished_at": "2026-01-01T00:00:00+00:00",
    }


def test_a_sweep_of_ones_own_format_records_and_prints_the_gmse_gmse_prints(run_cli, validator, my_format, tmp_path):
    from gmse_cli import resolve_format

    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    text = tmp_path / "text.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 200)
    out = tmp_path / "runs.jsonl"
    args = ("train", "--preset", "tiny-50k", "--format", str(my_format), "--max-steps", "2", "--data", str(text),
            "--tokenizer", "bpe:300", "--out", str(out), "--no-progress")
    plan = _json(run_cli, validator, *args, "--dry-run")["results"][0]["plan"]
    assert plan["name"] == "tiny-50k/w:myint4-g16/a:none/tpp100/s0"
    gmse = _json(run_cli, validator, "gmse", str(my_format))["results"][0]
    spec = resolve_format(str(my_format)).model_dump(mode="json")
    out.write_text(json.dumps(_record(plan, gmse, spec, 5.5)) + "\n")

    # Every planned run is in the results file: train prints the records, in the shared vocabulary
    # (the results file keeps its own names; fit reads it as written).
    run = _json(run_cli, validator, *args)["results"][0]
    stage = run["stage_gmse"]["weights"][0]
    assert (stage["gmse"], stage["gmse_low"], stage["gmse_high"], stage["gmse_method"]) == (
        gmse["gmse"], gmse["gmse_low"], gmse["gmse_high"], "monte-carlo")
    assert run["weights"] == gmse["name"] and run["format_gmse"]["weights"] == gmse["gmse"]
    rows = _csv(run_cli, *args)
    assert float(rows[0]["format_gmse.weights"]) == gmse["gmse"] and rows[0]["weights"] == "myint4-g16"
    assert "ci_low" in out.read_text()  # the file as written, untouched


# A law to generate runs from (the README's form, Chinchilla-like constants, the paper's L = 1).
TRUTH = {"A": 400.0, "alpha": 0.34, "B": 400.0, "beta": 0.28, "E": 1.7}
CURVE = {"L": 1.0, "F": 0.5, "C": 1.2}


def _loss(N: float, D: float, gmse: float, c: dict, curve: dict) -> tuple[float, float]:
    """(rho, loss) by the README's two formulas."""
    rho = curve["L"] * math.tanh(curve["F"] * max(-math.log(gmse) / math.log(4), 0.0)) ** curve["C"]
    return rho, c["A"] * (N * rho) ** -c["alpha"] + c["B"] * D ** -c["beta"] + c["E"]


def _synthetic_runs(run_cli, validator, path: Path, formats: list[str]) -> dict[str, float]:
    """A CSV of runs that follow TRUTH and CURVE exactly at each format's GMSE (from uscl gmse)."""
    gmse = {f: _json(run_cli, validator, "gmse", f)["results"][0]["gmse"] for f in formats}
    lines = ["N,D,loss,weights"]
    for f in formats:
        for N in (1e7, 3e7, 1e8):
            for tpp in (10, 40):
                lines.append(f"{N:g},{N * tpp:g},{_loss(N, N * tpp, gmse[f], TRUTH, CURVE)[1]!r},{f}")
    path.write_text("\n".join(lines) + "\n")
    return gmse


def test_a_fitted_law_predicts_in_rank_and_predict_what_the_fit_predicted(run_cli, validator, my_format, tmp_path):
    import tomllib

    runs, law_file = tmp_path / "runs.csv", tmp_path / "law.toml"
    formats = ["bf16", "int4", "int3", "int2", str(my_format)]
    gmse = _synthetic_runs(run_cli, validator, runs, formats)
    # the runs follow a tanh curve: fitted with one
    fit = _json(run_cli, validator, "fit", str(runs), "--model", "unified", "--curve", "tanh", "--no-heldout",
                "--out", str(law_file))
    fit = fit["results"][0]
    law = tomllib.loads(law_file.read_text())
    constants = {k: law[k]["value"] for k in TRUTH}
    curve = {k: law["families"]["quantization"][k]["value"] for k in CURVE}
    for key, truth in (TRUTH | {f"quantization.{k}": v for k, v in CURVE.items()}).items():
        assert fit["constants"][key]["value"] == pytest.approx(truth, rel=1e-5), key
    # One name for one format: the fit's scheme is the format's name, as rank and predict print it.
    assert {c["scheme"] for c in fit["capacities"]} == {"bf16", "int4", "int3", "int2", "myint4-g16"}
    names = {"myint4-g16": str(my_format)}
    for run in fit["residuals"][::3]:  # every scheme, both budgets
        fmt = names.get(run["scheme"], run["scheme"])
        rho, loss = _loss(run["params"], run["tokens"], gmse[fmt], constants, curve)
        assert run["predicted_loss"] == pytest.approx(loss, rel=1e-12)
        for command in ("rank", "predict"):
            item = _json(run_cli, validator, command, fmt, "--law", str(law_file), "--params", repr(run["params"]),
                         "--tokens", repr(run["tokens"]))["results"][0]
            assert item["rho"] == pytest.approx(rho, rel=1e-12)
            assert item["predicted_loss"] == pytest.approx(loss, rel=1e-12)
            assert item["beyond_fitted_range"] is None


def test_fit_refuses_one_scheme_name_for_two_formats(run_cli, tmp_path):
    # `uscl formats show int4-g128 > f.toml`, the group edited, the name kept: runs of the edited
    # format carry the catalog format's name. Pooled with the catalog format's runs they became one
    # scheme, fitted one decoupled capacity (a fit that exited 0), and reported with the first
    # run's GMSE.
    from gmse_cli import resolve_format

    edited = resolve_format("int4-g64").model_dump(mode="json") | {"name": "int4-g128"}
    specs = {"bf16": (resolve_format("bf16").model_dump(mode="json"), 1.0),
             "int4-g128": (resolve_format("int4-g128").model_dump(mode="json"), 0.8),
             "edited": (edited, 0.9)}
    lines = []
    for spec, rho in specs.values():
        for N in (1e7, 3e7, 1e8):
            for tpp in (10, 40):
                loss = TRUTH["A"] * (N * rho) ** -TRUTH["alpha"] + TRUTH["B"] * (N * tpp) ** -TRUTH["beta"] + TRUTH["E"]
                lines.append(json.dumps({"weights": spec["name"], "weights_spec": spec, "params": N,
                                         "tokens": N * tpp, "val_loss": loss, "status": "ok"}))
    runs = tmp_path / "runs.jsonl"
    runs.write_text("\n".join(lines) + "\n")
    res = run_cli("fit", str(runs), "--model", "decoupled", "--no-heldout")
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "scheme 'int4-g128' names two different formats" in res.stderr


@pytest.mark.parametrize("command", [("gmse",), ("rank", "int4"), ("predict", "--act", "int8")])
def test_csv_carries_what_json_carries(run_cli, validator, my_format, command):
    name, *rest = command
    args = (name, str(my_format), *rest)
    # Computed once first: a fresh Monte Carlo GMSE and the same GMSE read back from the cache
    # differ in the interval's sixth digit (the cache keeps no degrees of freedom) and in method.
    run_cli("gmse", str(my_format))
    _csv_matches_json(_csv(run_cli, *args), _json(run_cli, validator, *args)["results"])


def test_a_format_file_in_a_runs_csv_is_its_scheme_by_name_and_its_cell_by_path(my_format, tmp_path):
    from gmse_cli.runs import load_runs, select

    path = tmp_path / "runs.csv"
    path.write_text(f"N,D,loss,weights\n1e7,1e8,3.5,{my_format}\n1e7,1e8,3.6,int4\n")
    mine, catalog = load_runs(path)
    assert (mine.scheme, mine.weights, mine.weight_format().stages[0].group) == ("myint4-g16", str(my_format), 16)
    assert (catalog.scheme, catalog.weights_spec) == ("int4", None)
    # --where still matches the cell as written
    assert select([mine, catalog], [f"weights={my_format}"]) == [mine]


def test_a_gmse_read_back_from_the_cache_has_the_interval_it_was_computed_with(run_cli, validator):
    # Signed ints with absmax scales are estimated by a control-variate regression, whose standard
    # error has rows - columns degrees of freedom. The cache kept no degrees of freedom and took
    # rows - 1 from the sample count: the interval of every later command (and of a train record
    # against gmse) differed from the first in the sixth digit. (A format no other test measures,
    # so that the first call computes it.)
    fmt = "sint3-g16-sbf16"
    fresh, cached = (_json(run_cli, validator, "gmse", fmt)["results"][0] for _ in range(2))
    assert (fresh["gmse_method"], cached["gmse_method"]) == ("monte-carlo", "cache")
    for key in ("gmse", "gmse_std_err", "gmse_low", "gmse_high", "samples"):
        assert cached[key] == fresh[key], key
