"""A search's final GMSE of a tensor-scaled format rests on whole tensors also when it is refined
past the engine's minimum: at row length 10,000 a tensor is 131072 // 10000 = 13 rows, and the
1,024-row cap (78 tensors and 10 rows) cut the last tensor short, a tensor scale from 10 rows
that the engine never draws.

What was measured is read back from the cache (samples = rows * row length)."""

from __future__ import annotations

from gmse_cli import resolve_format
from gmse_cli.gmse import lookup_gmse
from gmse_cli.search.evaluate import GaussianEvaluator

ROW = 10_000
TENSOR_ROWS = 131072 // ROW  # 13


def test_refined_final_gmse_uses_whole_tensors():
    fmt = resolve_format("sint4-g16-se4m3")
    ev = GaussianEvaluator(seed=0, rel_err=1e-4, row_length=ROW, level_rows=(4, 16, 64), max_rows=1024,
                           cache="refresh")
    ev.final(fmt)
    est = lookup_gmse(fmt, row_length=ROW, rel_err=0.5)
    assert est is not None
    rows = est.samples // ROW
    assert rows % TENSOR_ROWS == 0, rows
    assert 32 * TENSOR_ROWS < rows <= 1024  # refined, within the cap
