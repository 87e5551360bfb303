"""``--max-samples`` below the minimum a valid interval needs: the note says what was drawn.

The engine never stops before its minimum (4 batches of 2^17 elements where rows are the
units, 32 batches where a per-tensor statistic makes the batches the units), so a cap below it
draws more than the cap. The stderr note must not then claim that sampling stopped at the cap.
"""

from __future__ import annotations

import json


def test_a_cap_below_the_minimum_names_the_samples_drawn(run_cli):
    cap = 300_000  # under 4 x 131,072 = 524,288: int4-g128's rows are independent
    res = run_cli("gmse", "int4-g128", "--rel-err", "1e-6", "--max-samples", str(cap), "--recompute", "--json")
    assert res.code == 0
    (row,) = json.loads(res.stdout)["results"]
    drawn = 4 << 17
    assert row["samples"] == drawn > cap
    assert f"stopped at --max-samples {cap:,} " not in res.stderr
    assert f"{drawn:,}" in res.stderr and f"--max-samples {cap:,}" in res.stderr


def test_the_help_says_the_cap_yields_to_the_minimum(run_cli):
    text = " ".join(run_cli("gmse", "--help").stdout.split())
    assert "minimum" in text
