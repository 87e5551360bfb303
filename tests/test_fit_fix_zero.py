"""`--fix E=0` (what a user tries after the fit notes E at its bound 0 and suggest --fix E=VALUE):
E is fitted through its logarithm, so 0 is refused in one line that says what to write instead."""

from __future__ import annotations


def test_fixing_e_at_zero_says_to_use_a_tiny_value(run_cli, shared_data):
    res = run_cli("fit", str(shared_data / "quest_runs.json"), "--model", "unified", "--fix", "E=0",
                  "--bootstrap", "0")
    assert res.code == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "E = 0.0 must be positive" in lines[0] and "1e-9" in lines[0], res.stderr
