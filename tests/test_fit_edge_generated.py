"""Fits on generated run sets at the edges of what a law can identify.

The runs come from a known law written in this file (the tanh capacity curve, the Chinchilla
form); what is checked is what the fit says it cannot identify, never a number copied from it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from gmse_cli import fit as F
from gmse_cli.fit.heldout import LOSSLESS_NOTE
from gmse_cli.gmse import gmse_of
from gmse_cli.runs import Run

TRUTH = {"A": 400.0, "alpha": 0.3, "B": 2000.0, "beta": 0.35, "E": 1.7}
SMALL_GRID = np.array([(a, al, b, be, e) for al, be, e, a, b in
                       itertools.product([0.2, 0.5], [0.2, 0.5], [0.0, 1.0], [4.0, 8.0], [4.0, 8.0])])


def _capacity(scheme: str, L: float, F_: float, C: float) -> float:
    g = gmse_of(scheme).gmse
    bits = math.inf if g == 0 else -math.log(g) / math.log(4.0)
    return L * math.tanh(F_ * bits) ** C


def _runs(rho: dict[str, float]) -> list[Run]:
    def loss(N: float, D: float, r: float) -> float:
        return TRUTH["A"] * (N * r) ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"] + TRUTH["E"]
    return [Run(scheme=s, weights=s, N=N, D=N * tpp, loss=loss(N, N * tpp, r))
            for s, r in rho.items() for N in (1e7, 4e7, 1.6e8) for tpp in (10.0, 40.0, 160.0)]


def test_a_held_out_scheme_with_only_gmse_0_stages_is_flagged():
    """sparse-0 prunes nothing (GMSE 0): under the law its capacity is the sparsity L whatever F and C,
    so a refit without its runs has no GMSE to predict it from. Its held-out entries (scheme and group)
    and the fit's notes say so; no scheme with a lossy stage of GMSE > 0 is flagged."""
    assert gmse_of("sparse-0").gmse == 0.0
    quant = {s: _capacity(s, 1.0, 0.41, 1.39) for s in ("bf16", "int4", "int3", "int2")}
    sparse = {s: _capacity(s, 1.0, 0.3, 0.5) for s in ("sparse-0", "sparse-25", "sparse-50", "sparse-75")}
    res = F.fit(_runs(quant | sparse), model="unified", starts=SMALL_GRID, profile=False)
    for report in (res.heldout_schemes, res.heldout_groups):
        flagged = {s for e in report.entries if LOSSLESS_NOTE in e.note for s in e.schemes}
        assert flagged == {"sparse-0"}
        assert all(e.refit == "cold" for e in report.entries)
    assert any("'sparse-0'" in note and "does not identify its capacity" in note for note in res.notes)
