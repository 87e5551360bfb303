"""The domain flag and the evidence beside it: a sparsify stage that keeps every entry prunes
nothing (no flag), and QuEST's unrotated rows are shown only for QuEST's own grid (the
catalog's intB, RMS-clipped per row), not for any int grid of the same width."""

from __future__ import annotations

import pytest

from gmse_cli.law import evidence_line, outside_domain
from gmse_cli.spec import resolve_format

_W = resolve_format("int4")


@pytest.mark.parametrize("act", ["sparse0", "4:4", "block4-0", "had128+sparse0"])
def test_activations_that_keep_every_entry_lie_inside_the_domain(act):
    assert outside_domain(_W, resolve_format(act)) is None


@pytest.mark.parametrize("act", ["sparse-50", "2:4", "had128+2:4+int4"])
def test_pruned_activations_are_still_flagged(act):
    assert "sparsified" in outside_domain(_W, resolve_format(act))


@pytest.mark.parametrize("act", ["int4-g128", "w4a16", "mxint8", "int8-g128", "int4-sbf16"])
def test_another_int_grid_gets_the_summary_not_quests_row(act):
    fmt = resolve_format(act)
    assert outside_domain(_W, fmt) is not None
    line = evidence_line(fmt)
    assert not line.startswith("QuEST trained"), line
    assert line.startswith("QuEST's unrotated W+A runs kept")


@pytest.mark.parametrize(("act", "rho"), [("int2", "0.0815"), ("int4", "0.589"), ("2:4+int4", "0.589")])
def test_quests_own_grid_gets_its_row(act, rho):
    line = evidence_line(resolve_format(act))
    assert line.startswith(f"QuEST trained W:int{act[-1]} A:int{act[-1]} (unrotated) to rho {rho} ")
