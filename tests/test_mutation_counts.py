"""Counts at the suffix boundaries: a count of exactly 1e3, 1e6, 1e9, 1e12 takes the larger
suffix (``1M``, not ``1e+03k``). The expected text is the definition of an SI suffix, written
out by hand, not uscl's output."""

from __future__ import annotations

import pytest

from gmse_cli.counts import si


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (1e3, "", "1k"),
        (1e6, "", "1M"),
        (1e9, "", "1B"),
        (1e12, "", "1T"),
        (-1e6, "", "-1M"),
        (1e9, "B", "1 GB"),
        (1e6, "B", "1 MB"),
        (999.0, "", "999"),
    ],
)
def test_exact_powers_take_the_larger_suffix(value, unit, text):
    assert si(value, unit) == text
