"""Where a prediction's point value sits in its interval: a fitted capacity ceiling L above 1
(QuEST's runs give 1.026) must not truncate its draws at the point value, which put every
draw of L at or below it and the point at the top of every capacity and loss interval."""

from __future__ import annotations

import tomllib

import numpy as np

from gmse_cli.law import Constant, FamilyCurve, Law, sample_law
from gmse_cli.paths import laws_dir


def _c(value: float, sigma: float | None = None) -> Constant:
    return Constant(value=value, sigma=sigma, provenance="test")


def test_shipped_quest_law_draws_L_on_both_sides_of_its_value():
    law = tomllib.loads((laws_dir() / "quest-c4.toml").read_text())
    value = law["families"]["quantization"]["L"]["value"]
    column = np.asarray(law["draws"]["constants"]["quantization.L"])
    above = float(np.mean(column > value))
    # a bootstrap of a smooth fit puts its replicates around the point: a share near one half
    assert 0.2 < above < 0.8, above


def test_quest_law_point_lies_strictly_inside_its_50_percent_intervals():
    from gmse_cli.rank import predict

    # int8's capacity is L times tanh(...)^C with tanh near 1: its draws follow L's
    pred = predict("int8", params=200e6, tokens=20e9, law="quest-c4", level=0.5)
    for value, low, high in ((pred.rho, pred.rho_low, pred.rho_high),
                             (pred.predicted_loss, pred.loss_low, pred.loss_high)):
        assert low < value < high, (low, value, high)


def test_vary_L_draws_a_marginal_L_above_one_on_both_sides():
    law = Law(name="t", A=_c(15.0), alpha=_c(0.13), B=_c(350.0), beta=_c(0.33), E=_c(1.3),
              families={"quantization": FamilyCurve(L=_c(1.026, 0.015), F=_c(0.41), C=_c(1.39))})
    L = sample_law(law, draws=4000, rng=0, vary_L=True).curves["quantization"][0]
    # a normal of sigma 0.015 about 1.026, truncated only at 2: half above, none above 2
    assert abs(float(np.mean(L > 1.026)) - 0.5) < 0.03
    assert L.max() <= 2.0

