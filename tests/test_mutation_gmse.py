"""Degrees of freedom of a stored Monte Carlo standard error that does not record its own:
k independent unit totals leave k - 1 (the sample variance's divisor), rows for a format whose
rows are compressed independently, batches of 2^17 elements otherwise. The t quantile on
them is scipy's, not uscl's."""

from __future__ import annotations

import pytest
from scipy import stats

from gmse_cli.gmse.bank import stored_dof
from gmse_cli.gmse.estimates import interval95
from gmse_cli.spec import resolve_format


def test_independent_rows_leave_rows_minus_one():
    fmt = resolve_format("int3")  # QuEST's int3: every row compressed on its own
    assert fmt.rows_independent
    assert stored_dof(128 * 4096, 4096, fmt) == 127
    assert stored_dof(1000 * 512, 512, fmt) == 999
    # below 16 rows the variance estimate counts as 16 rows' (the documented minimum)
    assert stored_dof(4 * 4096, 4096, fmt) == 15


def test_batches_leave_batches_minus_one():
    fmt = resolve_format("int5-g512-sint8")  # a per-tensor statistic: batches are the units
    assert not fmt.rows_independent
    assert stored_dof(32 * (1 << 17), 4096, fmt) == 31
    assert stored_dof(40 * (1 << 17), 4096, fmt) == 39
    assert stored_dof(31 * (1 << 17), 4096, fmt) is None  # fewer than 32 batches: no honest interval


def test_the_interval_on_those_dof_is_students():
    fmt = resolve_format("int3")
    dof = stored_dof(128 * 4096, 4096, fmt)
    low, high = interval95(0.03, 0.001, dof=dof)
    assert high - 0.03 == pytest.approx(stats.t.ppf(0.975, 127) * 0.001, rel=1e-6)
