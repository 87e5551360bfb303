"""Stored GMSEs: the keys, the shipped table and the on-disk cache (gmse_cli.gmse.stored,
.table, .cache).

Independent references: the table's sampled Monte Carlo entries are recomputed here by the
engine on a bank of another seed (two unbiased estimates of one constant must agree within
their joint standard error), its exact entries by the quadrature, and the compressor
modules' own ALGORITHM_VERSION constants (imported) check the versions read from source.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.gmse import estimate_gmse, exact_gmse, lookup_gmse, stored
from gmse_cli.gmse.cache import read_cached
from gmse_cli.gmse.stored import ALGORITHM_MODULES, StoredGmse, algorithm_version, gmse_key
from gmse_cli.gmse.table import GmseTable, shipped_table, table_path
from gmse_cli.spec import Format, catalog, resolve_format

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def test_algorithm_versions_read_from_source_are_the_modules_own():
    from importlib import import_module

    for name, module in ALGORITHM_MODULES.items():
        algorithm_version.cache_clear()
        assert algorithm_version(name) == import_module(module).ALGORITHM_VERSION, name


def test_keys_change_with_the_stages_and_the_row_length_only():
    int4 = resolve_format("int4")
    key = gmse_key(int4, 4096)
    assert len(key) == 64 and key == gmse_key(resolve_format("int4"), 4096)
    # a name or a description is not part of what is measured
    renamed = int4.model_copy(update={"name": "my-int4", "description": "mine"})
    assert gmse_key(renamed, 4096) == key
    assert gmse_key(int4, 2048) != key
    others = ["int4-g64", "int4-rms2.5", "int3", "had128+int4", "sparse50+int4", "e2m1", "int4-sbf16"]
    keys = {gmse_key(resolve_format(f), 4096) for f in others}
    assert key not in keys and len(keys) == len(others)


@pytest.mark.parametrize("compressor, fmt", [("scalar", "int4"), ("grids", "nvfp4"), ("sparsity", "2:4"),
                                             ("rotate", "had128+int4"), ("vq", "vq2-b2"), ("grids", "vq2-b2")])
def test_keys_change_with_the_algorithm_version_of_a_compressor_the_format_runs(monkeypatch, compressor, fmt):
    f = resolve_format(fmt)
    bystander = resolve_format("int4" if compressor == "sparsity" else "sparse-30")  # does not run it
    before = gmse_key(f, 4096), gmse_key(bystander, 4096)
    real = stored.algorithm_version
    monkeypatch.setattr(stored, "algorithm_version", lambda name: real(name) + (name == compressor))
    assert gmse_key(f, 4096) != before[0]
    assert gmse_key(bystander, 4096) == before[1]


def test_a_codebook_file_enters_the_key_by_its_bytes(tmp_path):
    cb = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", cb)
    np.save(tmp_path / "b.npy", cb)  # another path, the same bytes
    fa = Format(stages=({"kind": "vq", "dim": 2, "bits": 2, "codebook": str(tmp_path / "a.npy")},))
    fb = Format(stages=({"kind": "vq", "dim": 2, "bits": 2, "codebook": str(tmp_path / "b.npy")},))
    assert gmse_key(fa, 4096) == gmse_key(fb, 4096)
    np.save(tmp_path / "b.npy", cb * 1.01)
    assert gmse_key(fa, 4096) != gmse_key(fb, 4096)
    missing = Format(stages=({"kind": "vq", "dim": 2, "bits": 2, "codebook": str(tmp_path / "none.npy")},))
    assert gmse_key(missing, 4096) is None


# --------------------------------------------------------------------------------------------
# The shipped table
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> GmseTable:
    return GmseTable.model_validate_json(table_path().read_bytes())


def test_the_table_covers_the_catalog_and_every_stage(table):
    prov = table.provenance
    assert prov.row_length == 4096 and prov.rel_err <= 1e-4 and prov.seed == 0
    assert prov.command.startswith("python examples/regenerate_gmse_table.py")
    assert prov.algorithms == {name: algorithm_version(name) for name in ALGORITHM_MODULES}
    keys = {e.key for e in table.entries}
    assert len(keys) == len(table.entries)
    for fmt in catalog().values():
        for part in (fmt, *(f for _, f in fmt.stage_formats())):
            assert gmse_key(part, 4096) in keys, part.display_name
    for e in table.entries:
        assert e.method == "exact" or e.std_err <= prov.rel_err * e.gmse * 1.0001, e.name


def test_every_entry_is_one_a_catalog_lookup_reads(table):
    # a regeneration writes exactly these: an entry no catalog format or stage keys to is dead
    # weight that `examples/regenerate_gmse_table.py` drops (had128+2:4x2+int4-allstats[quantize]
    # lingered after `allstats` without a sparsify stage became had128+int4's spelling and key)
    wanted = {gmse_key(part, 4096) for fmt in catalog().values() for part in (fmt, *(f for _, f in fmt.stage_formats()))}
    assert [e.name for e in table.entries if e.key not in wanted] == []


def test_exact_entries_are_the_quadrature(table):
    by_key = {e.key: e for e in table.entries}
    for fmt in catalog().values():
        e = by_key[gmse_key(fmt, 4096)]
        if e.method == "exact":
            assert e.gmse == exact_gmse(fmt), fmt.display_name


# A sample of Monte Carlo entries: MX, NVFP4, lookup table, group absmax, fp6, composite, VQ.
SAMPLED = ["mxfp4", "nvfp4", "nf4", "int4-g128", "mxfp6-e2m3", "2:4+int4", "vq2-b2"]


@pytest.mark.parametrize("name", SAMPLED)
def test_sampled_entries_agree_with_a_fresh_engine_run(table, name):
    entry = {e.key: e for e in table.entries}[gmse_key(resolve_format(name), 4096)]
    assert entry.method == "monte-carlo"
    fresh = estimate_gmse([name], rel_err=2e-3, seed=12345, cache="off")[0]
    assert fresh.method == "monte-carlo"
    # Two independent unbiased estimates of one constant: their difference is normal with the
    # joint standard error; 4.5 sigma leaves a false alarm once in ~150,000 checks.
    assert abs(fresh.gmse - entry.gmse) <= 4.5 * math.hypot(fresh.std_err, entry.std_err)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A GMSE cache of this test's own: the session's holds whatever other tests computed
    (`uscl rank ... lm3-g256`, nvfp4 at rows of 2048), in an order xdist decides."""
    from gmse_cli.gmse import cache

    monkeypatch.setattr(cache, "gmse_cache_dir", lambda: tmp_path)
    return tmp_path


def test_lookups_read_the_table_when_precise_enough(table, empty_cache):
    int4, nvfp4 = resolve_format("int4"), resolve_format("nvfp4")
    est = lookup_gmse(nvfp4, row_length=4096, rel_err=1e-3)
    entry = shipped_table()[gmse_key(nvfp4, 4096)]
    assert est.method == "table" and est.gmse == entry.gmse and est.std_err == entry.std_err
    assert lookup_gmse(int4, row_length=4096, rel_err=1e-9).method == "table"  # exact: any precision
    # asking for more precision than the table holds, or another row length, misses it
    assert lookup_gmse(nvfp4, row_length=4096, rel_err=entry.std_err / entry.gmse / 2) is None
    assert lookup_gmse(nvfp4, row_length=2048, rel_err=1e-3) is None


def test_forcing_a_method_or_a_backend_bypasses_the_table():
    (mc,) = estimate_gmse(["nvfp4"], method="monte-carlo", rel_err=1e-2, cache="use")
    (numpy,) = estimate_gmse(["nvfp4"], backend="numpy", rel_err=1e-2, cache="use", max_samples=1 << 21)
    (default,) = estimate_gmse(["nvfp4"], rel_err=1e-2)  # the engine's default: cache="off"
    assert mc.method == numpy.method == default.method == "monte-carlo"


# --------------------------------------------------------------------------------------------
# The on-disk cache
# --------------------------------------------------------------------------------------------


def test_cache_stores_reads_and_refreshes(empty_cache):
    fmt = resolve_format("lm3-g256")  # not in the table
    key = gmse_key(fmt, 4096)
    assert read_cached(key) is None
    (first,) = estimate_gmse([fmt], rel_err=1e-2, seed=3, cache="use")
    assert first.method == "monte-carlo"
    entry = read_cached(key)
    assert entry.gmse == first.gmse and entry.std_err == first.std_err and entry.seed == 3
    assert entry.algorithms == {"grids": algorithm_version("grids"), "scalar": algorithm_version("scalar")}
    (again,) = estimate_gmse([fmt], rel_err=1e-2, cache="use")
    assert again.method == "cache" and (again.gmse, again.ci_low, again.ci_high) == (first.gmse, first.ci_low, first.ci_high)
    # a request tighter than the entry computes again (and stores the better value), as does
    # "refresh" (16 batches, the least Monte Carlo runs, reach well below rel_err 1e-2)
    (tight,) = estimate_gmse([fmt], rel_err=first.std_err / first.gmse / 1.5, seed=5, cache="use")
    assert tight.method == "monte-carlo" and read_cached(key).seed == 5
    (fresh,) = estimate_gmse([fmt], rel_err=1e-2, seed=6, cache="refresh")
    assert fresh.method == "monte-carlo" and read_cached(key).seed == 6
    # "off" neither reads nor writes
    (off,) = estimate_gmse([fmt], rel_err=1e-2, seed=7, cache="off")
    assert off.method == "monte-carlo" and read_cached(key).seed == 6


def test_a_damaged_or_misfiled_entry_is_recomputed(empty_cache):
    fmt = resolve_format("lm2-g512")
    key = gmse_key(fmt, 4096)
    path = empty_cache / f"{key}.json"
    for damage in ('{"key": "', "not json", json.dumps({"key": "0" * 64})):
        path.write_text(damage)
        assert read_cached(key) is None
        (est,) = estimate_gmse([fmt], rel_err=1e-2, cache="use")
        assert est.method == "monte-carlo" and read_cached(key).gmse == est.gmse
    # a whole entry filed under another key is not this format's
    other = json.loads(path.read_text()) | {"key": "f" * 64}
    path.write_text(json.dumps(other))
    assert read_cached(key) is None


def test_an_entry_holding_an_impossible_value_is_recomputed(empty_cache):
    # Valid JSON under the right key whose GMSE is inf (1e400 parses as inf), nan or negative:
    # the inf one served every request (std_err <= rel_err * inf) and printed "inf ... cache".
    fmt = resolve_format("lm2-g512")
    key = gmse_key(fmt, 4096)
    path = empty_cache / f"{key}.json"
    (good,) = estimate_gmse([fmt], rel_err=1e-2, cache="use")
    whole = path.read_text()
    for field, bad in (("gmse", "1e400"), ("gmse", "NaN"), ("gmse", "-1.0"), ("std_err", "Infinity"),
                       ("std_err", "-1e-3")):
        entry = json.loads(whole)
        text = json.dumps(entry | {field: 0.125}).replace("0.125", bad)
        path.write_text(text.replace('"monte-carlo"', '"exact"'))  # exact entries serve any request
        assert read_cached(key) is None, (field, bad)
        (est,) = estimate_gmse([fmt], rel_err=1e-2, cache="use")
        assert est.method == "monte-carlo" and math.isfinite(est.gmse) and 0 < est.gmse < 1
        assert est.gmse == pytest.approx(good.gmse, rel=0.05)


def test_exact_values_are_cached_too(empty_cache):
    fmt = resolve_format("lm5")  # single-stage, rms per row: exact, outside the table
    (first,) = estimate_gmse([fmt], cache="use")
    (again,) = estimate_gmse([fmt], cache="use")
    assert first.method == "exact" and again.method == "cache" and again.gmse == first.gmse
    assert again.ci_low == again.ci_high == again.gmse


_WRITER = textwrap.dedent(
    """
    import sys
    from gmse_cli.gmse import cache
    from gmse_cli.gmse.stored import StoredGmse
    from pathlib import Path
    folder = Path(sys.argv[1])
    cache.gmse_cache_dir = lambda: folder
    who = int(sys.argv[2])
    for i in range(300):
        cache.write_cached(StoredGmse(
            key="a" * 64, name=f"writer {who}", row_length=4096, gmse=0.01 + who + i * 1e-6, std_err=1e-6,
            method="monte-carlo", samples=i, seed=who, algorithms={"grids": 1},
        ))
        entry = cache.read_cached("a" * 64)
        assert entry is not None and entry.name in ("writer 0", "writer 1"), entry
    """
)


def test_two_processes_writing_one_key(tmp_path):
    # Both write the same key 300 times and read it back after every write: a reader sees one
    # writer's whole file or the other's, never a torn or missing one.
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(who)], cwd=REPO,
                         stderr=subprocess.PIPE, text=True)
        for who in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    final = StoredGmse.model_validate_json((tmp_path / ("a" * 64 + ".json")).read_bytes())
    assert final.samples == 299 and final.seed in (0, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a" * 64 + ".json"]  # no temporary left
