"""A capacity read below the smallest GMSE a law's runs had is flagged where the curve still
rises there (a curve fitted at one sparse GMSE says nothing measured about 10% sparsity), and
not where it is flat (the quantization curve below bf16's GMSE)."""

from __future__ import annotations

import tomllib

import numpy as np

from gmse_cli.paths import laws_dir


def _closed_rho(curve: dict, gmse: float) -> float:
    bits = max(-np.log(gmse) / np.log(4), 0.0) if gmse > 0 else np.inf
    return curve["L"]["value"] * np.tanh(curve["F"]["value"] * bits) ** curve["C"]["value"]


def test_a_gmse_below_the_fitted_ones_is_flagged_where_the_curve_still_rises():
    """quest-c4's runs had one sparse GMSE (0.208); 10% sparsity (0.000525) reads its curve far
    above it, unbacked. Below bf16's GMSE the quantization curve is flat: fp32 is not flagged."""
    from gmse_cli.rank import rank

    law = tomllib.loads((laws_dir() / "quest-c4.toml").read_text())
    low = law["fitted_range"]["gmse"]["sparsity"][0]
    curve = law["families"]["sparsity"]
    assert _closed_rho(curve, 0.000525) > 1.01 * _closed_rho(curve, low)  # 0.95 against 0.567
    rows = {r.name: r for r in rank(["sparse-10", "fp32", "int4"], law="quest-c4")}
    assert "below the smallest fitted" in rows["sparse-10"].beyond_fitted_gmse
    q = law["families"]["quantization"]
    q_low = law["fitted_range"]["gmse"]["quantization"][0]
    assert q["L"]["value"] <= 1.01 * _closed_rho(q, q_low)  # the curve at GMSE 0 is within 1%
    assert rows["fp32"].beyond_fitted_gmse is None and rows["int4"].beyond_fitted_gmse is None
