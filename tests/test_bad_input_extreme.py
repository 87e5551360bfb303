"""Valid-syntax but extreme input: a finite answer or one clear line (exit 2), never inf, nan,
a traceback or a silently absurd number (found by fuzzing what tests/bad_inputs.py does not
generate)."""

from __future__ import annotations

import math

import pytest


def _one_line(res) -> str:
    assert res.code == 2, (res.code, res.stdout[-500:], res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("tokens", ["1e-9x", "5e-324x", "1e300x"])
def test_tokens_per_param_must_give_at_least_one_finite_token(tokens, run_cli):
    # 200M params x 1e-9 = 0.2 tokens: refused as the count '0.2' is, not a loss of 1e106
    line = _one_line(run_cli("predict", "int4", "--tokens", tokens, "--draws", "10"))
    assert tokens in line


def test_params_whose_default_tokens_overflow_names_params(run_cli):
    # 1e308 params x 100 tokens per parameter overflows; the message named a 'tokens = inf' never given
    line = _one_line(run_cli("rank", "int4", "--params", "1e308", "--draws", "10"))
    assert "--params 1e308" in line


def test_a_ratio_to_the_fitted_range_past_the_largest_float_is_no_inf():
    # D/N = 1e-308 is 2.4e309 times below the smallest fitted 24.3: beyond any float ('infx below')
    from gmse_cli.law import load_law

    fitted = load_law(None).fitted_range
    low = fitted.tokens_per_param[0]
    flag = fitted.beyond(1e308, 1.0)
    assert low / 1e-308 == math.inf
    assert "D/N" in flag and "inf" not in flag
