"""`uscl mse --activations --json` against the shipped JSON Schema: the keys beside `results`
(tokens, the per-layer row statistics, the weights and the schemes) are described, so an output
with a misspelt, missing or mistyped activation key fails validation (before, the schema checked
only `results` and let any activation key through)."""

from __future__ import annotations

import copy
import json

import pytest

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def validator():
    from gmse_cli.schema import output_schema

    schema = output_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


_ARGS = ("--activations", "--tokens", "130", "--context", "64", "--device", "cpu", "-f", "int4", "-f",
         "had128+int4", "--weight-format", "int4", "--weight-format", "had128+int4", "--include",
         "encoder.layer.0.attention.self.*", "--rel-err", "0.05", "--json")

# Each breaks one activation key: a mistyped statistic, a missing key, a value out of range.
_BREAKS = {
    "kurtosis a string": lambda d: d.update(kurtosis="3.1"),
    "max_crest_rotated missing": lambda d: d.pop("max_crest_rotated"),
    "forward unknown": lambda d: d.update(forward="quantized"),
    "no tokens": lambda d: d.update(tokens=0),
    "a layer's max_crest a string": lambda d: d["layers"][0].update(max_crest="39"),
    "a layer's zero_rows missing": lambda d: d["layers"][0].pop("zero_rows"),
    "a scheme's rho a string": lambda d: d["schemes"][0].update(rho="0.5"),
    "a weight format's mse missing": lambda d: d["weights"][0].pop("mse"),
    "a stage's tensor unknown": lambda d: d["results"][0]["stages"][0].update(tensor="inputs"),
}


def _errors(validator, data) -> list[str]:
    return [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(data)]


def test_activation_output_validates_and_broken_keys_do_not(run_cli, validator, minilm_folder, docs_file):
    res = run_cli("mse", str(minilm_folder), "--data", str(docs_file(20_000)), *_ARGS)
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert _errors(validator, report) == []
    # 130 tokens in windows of 64 (62 text tokens between [CLS] and [SEP]): two windows.
    assert (report["tokens"], report["windows"], report["context"]) == (128, 2, 64)
    assert len(report["layers"]) == 3 and len(report["schemes"]) == 2  # plain with plain, rotated with rotated
    # Each format's stages say which tensor they compress, as predict's do.
    assert [[(s["tensor"], s["name"]) for s in f["stages"]] for f in report["results"]] == [
        [("activations", "int4[quantize]")], [("activations", "had128+int4[quantize]")]]
    assert [[(s["tensor"], s["name"]) for s in f["stages"]] for f in report["weights"]] == [
        [("weights", "int4[quantize]")], [("weights", "had128+int4[quantize]")]]
    passed = []
    for what, change in _BREAKS.items():
        broken = copy.deepcopy(report)
        change(broken)
        if not _errors(validator, broken):
            passed.append(what)
    assert not passed, f"broken activation outputs passed validation: {passed}"
