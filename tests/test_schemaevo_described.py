"""Every key a command's --json output prints is described in the shipped JSON Schema (its type
at least), not only the keys the schema requires: a reader of the schema learns every field."""

from __future__ import annotations

import copy
import json

import conftest
import pytest

jsonschema = pytest.importorskip("jsonschema")


def _described_only(schema):
    """``schema`` with every object that lists its properties closed to others (draft 2020-12's
    ``unevaluatedProperties``, which sees through allOf/$ref); an ``if`` test stays open."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and "results" not in props and "additionalProperties" not in node:
                node.setdefault("unevaluatedProperties", False)
            for key, value in node.items():
                if key != "if":
                    close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def strict():
    from gmse_cli.schema import output_schema

    return _described_only(output_schema())


def _undescribed(strict, res):
    assert res.code == 0, res.stderr
    return [f"{list(e.path)}: {e.message[:300]}" for e in strict.iter_errors(json.loads(res.stdout))]


def test_the_closed_schema_catches_an_undescribed_key(strict, run_cli):
    res = run_cli("formats", "--family", "vq", "--json")
    assert _undescribed(strict, res) == []
    doc = json.loads(res.stdout)
    doc["results"][0]["no_such_key"] = 1
    assert any("no_such_key" in e.message for e in strict.iter_errors(doc))


def test_every_key_of_a_unified_fit_is_described(strict, run_cli):
    runs = conftest.REPO_ROOT / "examples" / "cpu-law.jsonl"
    res = run_cli("fit", str(runs), "--model", "unified", "--no-heldout", "--json")
    assert _undescribed(strict, res) == []


def test_every_key_of_gmse_rank_predict_formats_is_described(strict, run_cli):
    for args in (("gmse", "int4", "fp4", "--vs", "int4"), ("rank", "int4", "2:4+int4"),
                 ("predict", "2:4+int4", "--act", "int8"), ("formats", "--family", "vq")):
        assert _undescribed(strict, run_cli(*args, "--json")) == [], args
