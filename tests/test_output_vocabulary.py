"""`uscl fit --json` speaks the shared vocabulary everywhere, its capacity drift included: the
drift's intervals were bare 'low'/'high' (and its standard error 'stderr'), spellings the
schema's vocabulary forbids, unseen because the schema did not describe 'drift'."""

from __future__ import annotations

import json

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

_OLD = {"ci_low", "ci_high", "low", "high", "format", "method", "stderr"}


def _keys(item, skip=("spec", "weights_spec", "activations_spec")):
    if isinstance(item, dict):
        for k, v in item.items():
            yield k
            if k not in skip:
                yield from _keys(v, skip)
    elif isinstance(item, list):
        for v in item:
            yield from _keys(v, skip)


def test_fit_drift_uses_the_shared_interval_names(run_cli, shared_data):
    from gmse_cli.schema import output_schema

    res = run_cli("fit", str(shared_data / "quest_runs.json"), "--model", "unified", "--no-heldout", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in jsonschema.Draft202012Validator(output_schema()).iter_errors(data)]
    assert not errors, errors
    fit = data["results"][0]
    assert not _OLD & set(_keys(fit)), _OLD & set(_keys(fit))
    slopes = fit["drift"]["slopes"]
    assert {s["regressor"] for s in slopes} == {"log N", "log D/N"}
    for s in slopes:  # a t interval around the slope, wider than one standard error each side
        assert s["slope_low"] < s["slope"] - s["slope_std_err"] < s["slope"] + s["slope_std_err"] < s["slope_high"]
    schemes = [s for s in fit["drift"]["schemes"] if s["slope_log_n_low"] is not None]
    assert schemes and all(s["slope_log_n_low"] <= s["slope_log_n"] <= s["slope_log_n_high"] for s in schemes)
    # A scheme's stages in the shape predict prints them (fit's 'stage_gmse' pairs named no tensor).
    caps = {c["scheme"]: c for c in fit["capacities"]}
    for scheme in ("W:int2 A:int2", "W:had128+2:4x2+int4-allstats A:had128+int4", "had128+int3"):
        cap = caps[scheme]
        pred = run_cli("predict", cap["weights"], *(["--act", cap["activations"]] if cap["activations"] else []), "--json")
        assert pred.code == 0, pred.stderr
        expected = json.loads(pred.stdout)["results"][0]["stages"]
        got = cap["stages"]
        assert [(s["tensor"], s["family"]) for s in got] == [(s["tensor"], s["family"]) for s in expected]
        for g, e in zip(got, expected, strict=True):  # the fit's Monte Carlo (rel. error 1e-3) against the table
            assert g["gmse"] == pytest.approx(e["gmse"], rel=5e-3), (scheme, g, e)


def test_the_schema_rejects_a_drift_with_bare_low_high():
    from gmse_cli.schema import output_schema

    bare = {"regressor": "log N", "slope": 0.0, "low": -1.0, "high": 1.0, "stderr": 0.5}
    drift = output_schema()["$defs"]["fit"]["properties"]["drift"]
    validator = jsonschema.Draft202012Validator({**drift, "$defs": output_schema()["$defs"]})
    assert not validator.is_valid({"slopes": [bare], "schemes": []})


def test_fit_residuals_say_params_tokens_and_predicted_loss_as_rank_and_train_do(run_cli, tmp_path):
    from gmse_cli.fit.results import RunResidual

    # Three sizes at two data ratios of a known dense law, loss = 400 N^-0.34 + 2000 D^-0.37 + 1.8.
    runs = [{"N": n, "D": n * r, "loss": 400 * n ** -0.34 + 2000 * (n * r) ** -0.37 + 1.8}
            for n in (1e7, 3e7, 1e8, 3e8) for r in (20, 60)]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    res = run_cli("fit", str(path), "--model", "dense", "--json")
    assert res.code == 0, res.stderr
    residuals = json.loads(res.stdout)["results"][0]["residuals"]
    for run, r in zip(runs, residuals, strict=True):
        assert r["params"] == r["N"] == run["N"] and r["tokens"] == r["D"] == run["D"]
        assert r["predicted_loss"] == r["predicted"]
        assert r["residual"] == pytest.approx(0.0, abs=1e-5) and r["predicted_loss"] == pytest.approx(run["loss"], rel=1e-5)
        assert RunResidual.model_validate(r).model_dump(mode="json") == r  # its own JSON reads back


def test_mse_names_each_stage_as_predict_does(run_cli, tmp_path):
    """`uscl mse --json` stages were bare (family, mse, gmse); a program joining them to predict's
    could not tell which stage was which. Now each has predict's tensor, family and name."""
    from safetensors.numpy import save_file

    from gmse_cli.schema import output_schema

    rng = np.random.default_rng(0)
    model = tmp_path / "model.safetensors"
    save_file({"layers.0.mlp.up_proj.weight": rng.standard_normal((8, 256)).astype(np.float32)}, str(model))
    res = run_cli("mse", str(model), "-f", "2:4+int4", "-f", "int3", "--hadamard", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in jsonschema.Draft202012Validator(output_schema()).iter_errors(data)]
    assert not errors, errors
    for item in data["results"]:
        pred = run_cli("predict", item["name"], "--json")
        assert pred.code == 0, pred.stderr
        expected = [(s["tensor"], s["family"], s["name"]) for s in json.loads(pred.stdout)["results"][0]["stages"]]
        assert [(s["tensor"], s["family"], s["name"]) for s in item["stages"]] == expected
    names = [[s["name"] for s in item["stages"]] for item in data["results"]]
    assert names == [["2:4+int4[sparsify]", "2:4+int4[quantize]"],
                     ["had128+2:4+int4[sparsify]", "had128+2:4+int4[quantize]"],
                     ["int3[quantize]"], ["had128+int3[quantize]"]]
