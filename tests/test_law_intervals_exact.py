"""Predict's intervals recomputed draw for draw from the documented sampling model: rows of the
law file's joint draws picked by the seeded generator, then, in a fixed order, split-normal
marginals (sigma from low/high read as a central 95% interval, else sigma) for the constants
the draws lack, truncated by rejection to the physical domain; L held unless --vary-L (then
truncated to at most 1, or 2 where its value is above 1); interval = inverted-CDF quantiles widened to hold the
point value. Formats with exact table GMSEs, so no GMSE draws enter."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest
from toml_text import toml_text

from gmse_cli.paths import laws_dir

_Z95 = 1.959963984540054


def _marginal(const: dict, n: int, rng: np.random.Generator, upper: float = math.inf) -> np.ndarray:
    value, sigma = const["value"], const.get("sigma", 0.0)
    minus = max((value - const["low"]) / _Z95 if "low" in const else sigma, 0.0)
    plus = max((const["high"] - value) / _Z95 if "high" in const else sigma, 0.0)
    if minus == 0.0 and plus == 0.0:
        return np.full(n, value)
    upper = upper if value <= upper else 2.0  # a fitted L above 1 is drawn up to the file's ceiling
    out, todo = np.empty(n), np.arange(n)
    while todo.size:  # these cases never need the clipping fallback
        z = rng.standard_normal(todo.size)
        x = value + z * np.where(z < 0, minus, plus)
        ok = (x > 0) & (x <= upper)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def _draws(law: dict, n: int, seed: int, vary_L: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {k: np.asarray(v, float) for k, v in law.get("draws", {}).get("constants", {}).items()}
    pick = rng.integers(0, len(next(iter(cols.values()))), size=n) if cols else None

    def draw(name, const, upper=math.inf):
        return cols[name][pick] if name in cols else _marginal(const, n, rng, upper)

    out = {}
    for family in sorted(law["families"]):
        curve = law["families"][family]
        name = f"{family}.L"
        held = name not in cols and not vary_L
        out[name] = np.full(n, curve["L"]["value"]) if held else draw(name, curve["L"], upper=1.0)
        out[f"{family}.F"] = draw(f"{family}.F", curve["F"])
        out[f"{family}.C"] = draw(f"{family}.C", curve["C"])
    for key in ("A", "alpha", "B", "beta", "E"):
        out[key] = draw(key, law[key])
    return out


def _rho(gmse, L, F, C):
    return L * np.tanh(F * max(-math.log(gmse) / math.log(4), 0.0)) ** C


def _interval(values: np.ndarray, point: float, level: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return min(low, point), max(high, point)


def _variant(kind: str) -> dict:
    law = tomllib.loads((laws_dir() / "paper-llama-c4.toml").read_text())
    if kind == "marginals":
        law.pop("draws")
        law["alpha"].update(low=0.09, high=0.2)  # a split normal
        law["families"]["quantization"]["F"].update(low=0.3, high=0.45)
    elif kind == "some columns":
        law["draws"]["constants"] = {k: v for k, v in law["draws"]["constants"].items() if k in ("A", "B", "E")}
    return law


CASES = [  # law variant, format, level, draws, seed, vary_L
    ("shipped", "int4", 0.9, 37, 3, False),
    ("shipped", "2:4", 0.99, 500, 1, True),
    ("marginals", "int3", 0.95, 400, 7, False),
    ("marginals", "sparse-50", 0.5, 300, 2, True),
    ("some columns", "fp4", 0.8, 250, 5, True),
]


@pytest.mark.parametrize("kind, fmt, level, n, seed, vary_L", CASES)
def test_intervals_match_the_documented_draws(run_cli, tmp_path, kind, fmt, level, n, seed, vary_L):
    law = _variant(kind)
    path = tmp_path / "law.toml"
    path.write_text(toml_text(law))
    params, tokens = 3e8, 9e9
    args = ["predict", fmt, "--law", str(path), "--params", "3e8", "--tokens", "9e9", "--level", str(level),
            "--draws", str(n), "--seed", str(seed), "--json"] + (["--vary-L"] if vary_L else [])
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    p = json.loads(result.stdout)["results"][0]
    draws = _draws(law, n, seed, vary_L)
    rho_point, rho_draws = 1.0, np.ones(n)
    for stage in p["stages"]:
        assert stage["gmse_low"] == stage["gmse_high"]  # exact GMSE: no GMSE draws
        family, curve = stage["family"], law["families"][stage["family"]]
        rho_point *= _rho(stage["gmse"], *(curve[k]["value"] for k in "LFC"))
        rho_draws = rho_draws * _rho(stage["gmse"], *(draws[f"{family}.{k}"] for k in "LFC"))
    A, alpha, B, beta, E = (law[k]["value"] for k in ("A", "alpha", "B", "beta", "E"))
    loss_point = A * (params * rho_point) ** -alpha + B * tokens ** -beta + E
    dense_point = A * params ** -alpha + B * tokens ** -beta + E
    loss_draws = draws["A"] * (params * rho_draws) ** -draws["alpha"] + draws["B"] * tokens ** -draws["beta"] + draws["E"]
    dense_draws = draws["A"] * params ** -draws["alpha"] + draws["B"] * tokens ** -draws["beta"] + draws["E"]
    for keys, point, values in (
        (("rho", "rho_low", "rho_high"), rho_point, rho_draws),
        (("predicted_loss", "loss_low", "loss_high"), loss_point, loss_draws),
        (("delta_loss_vs_bf16", "delta_loss_low", "delta_loss_high"), loss_point - dense_point, loss_draws - dense_draws),
    ):
        expected = (point, *_interval(values, point, level))
        assert [p[k] for k in keys] == pytest.approx(expected, rel=1e-12, abs=1e-14), keys
