"""The API's default token count (100 per parameter) overflows past 1.8e306 parameters: the
error names the params given, not a 'tokens = inf' the caller never passed."""

from __future__ import annotations

import pytest

from gmse_cli import predict
from gmse_cli.errors import LawError


@pytest.mark.parametrize("params", [1e307, 1.7e308])
def test_default_tokens_overflow_names_params(params):
    with pytest.raises(LawError) as info:
        predict("int4", params=params, draws=2)
    message = str(info.value)
    assert message.startswith(f"params = {params!r}") and "tokens = inf" not in message


def test_largest_params_whose_default_tokens_are_finite_still_predict():
    params = 1e306  # 100 x 1e306 = 1e308 < 1.797e308, the largest float
    prediction = predict("int4", params=params, draws=2)
    assert prediction.tokens == 100 * params
