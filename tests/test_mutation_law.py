"""The documented draw domain of a capacity curve's L: 0 < L <= 1 where its value is at most 1,
else up to MAX_L (2). A fitted L above 1 (QuEST's runs give 1.026) admits joint draws on both
sides of it; a domain capped at 1, or at the value, would refuse or drop a law file's bootstrap
rows above its own point value."""

from __future__ import annotations

import pytest

from gmse_cli.law.model import Constant, FamilyCurve, Law, LawDraws, draws_in_domain


def _c(value: float) -> Constant:
    return Constant(value=value, provenance="test")


def test_draws_of_L_may_pass_its_value_when_above_one():
    assert draws_in_domain("quantization.L", [0.5, 1.0, 1.01, 1.02, 1.03, 2.0, 2.01], 1.02).tolist() == [
        True, True, True, True, True, True, False]
    assert draws_in_domain("quantization.L", [1.0, 1.01], 0.9).tolist() == [True, False]
    assert draws_in_domain("quantization.L", [0.0], 0.9).tolist() == [False]


def _law(L: float, column: tuple[float, ...]) -> Law:
    return Law(
        name="t", A=_c(15.0), alpha=_c(0.13), B=_c(350.0), beta=_c(0.33), E=_c(1.3),
        families={"quantization": FamilyCurve(L=_c(L), F=_c(0.41), C=_c(1.39))},
        draws=LawDraws(provenance="test", constants={"quantization.L": column}),
    )


def test_a_law_file_accepts_L_draws_above_its_value_when_it_is_above_one():
    assert _law(1.026, (1.0, 1.02, 1.026, 1.05)).draws is not None
    with pytest.raises(ValueError, match="may not exceed"):  # pydantic wraps the LawError
        _law(1.026, (1.0, 2.03))
    with pytest.raises(ValueError, match="may not exceed"):
        _law(0.99, (0.98, 1.01))
