"""A law written from a dense fit says truly why its capacity curves come from the base law.

A dense fit counts every run as uncompressed (rho = 1) and fits no capacity curve, so the law
it writes takes every curve from the base law. The provenance of those constants must not claim
that the runs held no run of the family: examples/cpu-law.jsonl is all quantization runs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

RUNS = Path(__file__).resolve().parents[1] / "examples" / "cpu-law.jsonl"


def test_dense_law_curves_say_the_fit_has_none(run_cli, tmp_path):
    out = tmp_path / "dense.toml"
    res = run_cli("fit", str(RUNS), "--model", "dense", "--no-heldout", "--out", str(out))
    assert res.code == 0, res.stderr
    law = tomllib.loads(out.read_text(encoding="utf-8"))
    quant = law["families"]["quantization"]
    for key in ("L", "F", "C"):
        text = quant[key]["provenance"]
        assert "no quantization runs" not in text
        assert "dense fit" in text and "paper-llama-c4" in text
