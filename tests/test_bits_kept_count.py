"""Bits per parameter bill the entries pruning actually keeps on rows of the given length.

Magnitude pruning keeps round-half-up((1 - P) L) entries of a row of L, and block pruning
zeroes round-half-up(P x blocks) blocks (README, "Rules the table leaves out"). The bill used to
take the nominal 1 - P instead, so at some row lengths a format stored more values than it
paid for, and the rate-distortion check then refused the tool's own result (sparse50+fp16 on
rows of 1 keeps its one entry: 12.2 effective bits "from 9.000 stored"). Every expected number
below is worked out by hand from those rules and the README's cost formula.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gmse_cli.search.space import SearchSpace, build_pool
from gmse_cli.spec import Format, Sparsify, resolve_format


def h(p: float) -> float:
    """Binary entropy in bits (the README's mask cost of unstructured pruning)."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@pytest.mark.parametrize(
    "name, row_length, bits",
    [
        # 0.85 x 10 = 8.5 rounds half-up to 9 kept: 9/10 of the entries in bf16, mask H(0.9)
        ("sparse15", 10, 0.9 * 16 + h(0.9)),
        # catalog sparse-90 at the default 4096: 409.6 rounds to 410 kept
        ("sparse-90", 4096, 410 / 4096 * 16 + h(410 / 4096)),
        # sparse-10: 3686.4 rounds to 3686 kept
        ("sparse-10", 4096, 3686 / 4096 * 16 + h(3686 / 4096)),
        # 10 blocks of 4; 0.25 x 10 = 2.5 rounds to 3 zeroed, 7 of 10 kept; mask H(0.7) per block of 4
        ("block4-25", 40, 0.7 * 16 + h(0.7) / 4),
        # 0.5 x 1 = 0.5 rounds to 1: nothing is pruned, 16 bits of fp16 and no mask information
        ("sparse50+fp16", 1, 16.0),
        # 7.5 rounds to 8 kept of 10: int4 on 0.8 of the entries + H(0.8) + one fp32 RMS scale per row
        ("sparse25+int4", 10, 0.8 * 4 + h(0.8) + 32 / 10),
        # vq2-b2 after 8 of 10 kept: slices of 2 hold a kept entry with probability 1 - 0.2^2
        # (exchangeable entries), 4 index bits per such slice = 2 bits per position
        ("sparse25+vq2-b2", 10, (1 - 0.2**2) * 2 + h(0.8) + 32 / 10),
        # N:M keeps exactly N of M at any row length: unchanged, log2(C(4,2))/4 + 8
        ("2:4", 4, math.log2(6) / 4 + 8),
    ],
)
def test_bits_bill_the_kept_count(name, row_length, bits):
    assert resolve_format(name).bits_per_param(row_length) == pytest.approx(bits, rel=1e-12)


def test_pruning_per_tensor_bills_the_density():
    # One count rounded over a whole tensor moves the fraction by under 1/(rows x L): 0.85.
    fmt = Format(stages=(Sparsify(pattern="magnitude", sparsity=0.15, granularity="tensor"),))
    assert fmt.bits_per_param(10) == pytest.approx(0.85 * 16 + h(0.85), rel=1e-12)


def test_formats_json_reports_the_kept_count(run_cli):
    out = run_cli("formats", "--family", "sparsity", "--json")
    assert out.code == 0, out.stderr
    got = {r["name"]: r["bits_per_param"] for r in json.loads(out.stdout)["results"]}
    # sparse-70 at 4096: 0.3 x 4096 = 1228.8 rounds to 1229 kept
    assert got["sparse-70"] == pytest.approx(1229 / 4096 * 16 + h(1229 / 4096), rel=1e-12)


def test_rate_distortion_check_accepts_a_row_that_keeps_everything(run_cli):
    # Rows of 1 under sparse50 keep their entry (0.5 rounds up), so fp16 stores every value:
    # 16 bits billed, and fp16's ~12.2 effective bits are within them.
    out = run_cli("gmse", "sparse50+fp16", "--row-length", "1", "--rel-err", "0.05", "--json")
    assert out.code == 0, out.stderr
    (row,) = json.loads(out.stdout)["results"]
    assert row["bits_per_param"] == 16.0
    assert row["effective_bits"] < 16.0


def test_search_pool_prices_pairs_as_the_formats_do():
    # (A guard on the fix rather than a check of it: the pool must bill kept counts as the
    # formats now do.) The search adds mask + kept fraction x element bits + scales per pair before building
    # each format; at 4096 sparse10/20/30 keep 3686/3277/2867 entries, not 0.9/0.8/0.7 x 4096.
    pool = build_pool(1.5, SearchSpace(), [4096], [1.0])
    assert len(pool.pair_bits) > 0
    own = np.array([pool.pair(i).bits_per_param for i in range(len(pool.pair_bits))])
    assert np.abs(own - pool.pair_bits).max() < 1e-9


# -- rows that a catalog format's groups do not divide ----------------------------------------


def test_rank_of_the_catalog_leaves_out_what_rows_cannot_split(run_cli):
    # Rows of 100: groups of 128 (int4-g128) and blocks of 32 (mxfp4) do not divide them, as
    # `uscl formats --row-length 100` notes; rank the rest rather than refuse the whole catalog.
    out = run_cli("rank", "--row-length", "100", "--family", "quantization", "--json")
    assert out.code == 0, out.stderr
    rows = {r["name"]: r["bits_per_param"] for r in json.loads(out.stdout)["results"]}
    assert "int4-g128" not in rows and "mxfp4" not in rows
    assert rows["int4"] == pytest.approx(4 + 32 / 100, rel=1e-12)  # one fp32 RMS scale per row of 100
    assert "note: left out" in out.stderr and "rows of 100" in out.stderr


def test_rank_of_a_named_format_names_it_not_its_stage(run_cli):
    out = run_cli("rank", "int4-g128", "--row-length", "100")
    assert out.code == 2
    assert "format 'int4-g128':" in out.stderr and "[quantize]" not in out.stderr
