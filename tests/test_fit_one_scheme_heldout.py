"""A unified fit of one compressed scheme (beside its dense runs) has nothing left to refit
when that scheme is held out: its held-out entry said 'no runs to fit (check the files and the
--where / --exclude-worst selection)', which sent the user to check inputs that were fine."""

from __future__ import annotations

import itertools
import math

import numpy as np

from gmse_cli import fit as F
from gmse_cli.gmse import gmse_of
from gmse_cli.law.files import shipped_law
from gmse_cli.runs import Run

GRID = np.array([(a, al, b, be, e) for al, be, e, a, b in
                 itertools.product([0.2, 0.5], [0.2, 0.5], [0.0, 1.0], [4.0, 8.0], [4.0, 8.0])])


def test_a_held_out_scheme_with_every_fitted_run_is_named_as_such():
    rho = math.tanh(0.41 * -math.log(gmse_of("int4").gmse) / math.log(4.0)) ** 1.39
    runs = [Run(scheme="int4", weights="int4", N=N, D=N * t, loss=400 * (N * rho) ** -0.3 + 2000 * (N * t) ** -0.35 + 1.7)
            for N in (1e7, 4e7, 1.6e8, 6.4e8) for t in (10.0, 40.0, 160.0)]
    res = F.fit(runs, model="unified", starts=GRID, profile=False, base_law=shipped_law())
    entries = res.heldout_schemes.entries
    assert [e.name for e in entries] == ["int4"] and entries[0].refit == "none"
    assert "all the fitted runs are its own" in entries[0].note
    assert "--where" not in entries[0].note
