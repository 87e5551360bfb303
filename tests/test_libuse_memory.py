"""A long-lived program (a service ranking its users' formats) keeps uscl's memory bounded.

Every per-process memo keyed by something a user names (a grid's values, a group size, a format
name, a codebook file) holds at most a bounded number of entries; unbounded ones (``@cache``,
a module dict) are allowed only for keys from a small fixed set (no arguments, grid codes,
compressor names). Before, 300 distinct ``lut`` grids left 300 entries in two caches, a runs
file naming 5,000 shorthands 5,000 formats, and each new codebook file its array.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np

import gmse_cli

# Unbounded caches whose keys come from a small fixed set.
FIXED_KEYS = {
    "gmse_cli.schema.output_schema", "gmse_cli.paths.catalog_dir", "gmse_cli.paths.sweeps_dir",
    "gmse_cli.spec.catalog.catalog", "gmse_cli.gmse.table.shipped_table",
    "gmse_cli.gmse.control._gauss_legendre", "gmse_cli.gmse.stored.algorithm_version",
    "gmse_cli.frozen._scalar_rules", "gmse_cli.messages.stderr_console", "gmse_cli.cli.console._out_console",
    "gmse_cli.compress.lloyd_max._lloyd_max_levels",  # bits 1-16 at the module's own tolerances
    "gmse_cli.compress.scalar.mse_rule._mse_ratio_kernel", "gmse_cli.compress.scalar.mse_rule.tensor_errors_kernel",
    "gmse_cli.compress.scalar.quantizer.groups_kernel", "gmse_cli.compress.scalar.rounding._write_row_kernel",
    "gmse_cli.compress.scalar.rounding.write_groups_kernel", "gmse_cli.compress.scalar.double_quant.dynamic_code",
    "gmse_cli.compress.scalar.double_quant._code_midpoints",
    "gmse_cli.compress.vq.gaussian.gaussian_codebook",  # dim, bits 1-16: and each trained once
    "gmse_cli.compress.vq.e8p.e8p_abs_patterns", "gmse_cli.compress.vq.e8p._e8p_codebook_cached",
    "gmse_cli.compress.vq.codebooks._e8p_info", "gmse_cli.compress.grids.fp_params",
}


def _library_modules():
    for info in pkgutil.walk_packages(gmse_cli.__path__, "gmse_cli."):
        if info.name.startswith(("gmse_cli.training", "gmse_cli.interop.torchao")) or info.name.endswith("__main__"):
            continue  # torch's floor: not imported by the library's core
        yield importlib.import_module(info.name)


def test_no_unbounded_cache_on_user_keys():
    unbounded = set()
    for module in _library_modules():
        for name, value in vars(module).items():
            params = getattr(value, "cache_parameters", None)
            if callable(params) and getattr(value, "__module__", None) == module.__name__:
                if params()["maxsize"] is None:
                    unbounded.add(f"{module.__name__}.{name}")
    assert unbounded <= FIXED_KEYS, sorted(unbounded - FIXED_KEYS)


def test_distinct_lut_grids_keep_a_bounded_cache(monkeypatch):
    """Optimal RMS constants of many distinct lut grids: the in-memory memos are bounded, and the
    same constants come back on a second pass."""
    from gmse_cli.compress import grid_mse
    from gmse_cli.spec import parse_shorthand

    grids = [f"lut[-1,-0.5,0,{0.1 + i / 100:g},1]" for i in range(24)]
    stages = [parse_shorthand(g).quantizer for g in grids]
    first = [grid_mse.optimal_rms_constant(s) for s in stages]
    assert grid_mse._optimal_constant.cache_info().currsize <= grid_mse._optimal_constant.cache_info().maxsize
    assert grid_mse._key_levels.cache_info().maxsize is not None
    # evicted or not, the same number comes back
    assert [grid_mse.optimal_rms_constant(s) for s in stages] == first


def test_runs_format_memo_is_bounded():
    """A runs file naming ever new shorthands (int4 with 5,000 distinct rms constants)."""
    from gmse_cli.runs import fields

    fields._RESOLVED.clear()
    for i in range(4200):
        fmt = fields.check_spec(f"int4-rms{1 + i / 1e5:.5f}", "runs.json:1", "scheme")
    assert len(fields._RESOLVED) <= 4096
    assert fmt.display_name.startswith("int4")
    fields._RESOLVED.clear()


def test_codebook_files_are_not_all_kept(tmp_path):
    """A program writing a new codebook file per call: at most 64 arrays held."""
    from gmse_cli.compress.vq import codebooks

    rng = np.random.default_rng(0)
    codebooks.clear_caches()
    for i in range(80):
        path = tmp_path / f"cb{i}.npy"
        np.save(path, rng.standard_normal((4, 2)))
        codebooks._file_book(str(path), 2, 2)
    assert len(codebooks._file_memo) <= 64
    codebooks.clear_caches()


def test_lru_bound_helper():
    from gmse_cli.limits import keep_bounded

    memo: dict = {}
    for i in range(10):
        keep_bounded(memo, i, i * i, limit=4)
    assert memo == {6: 36, 7: 49, 8: 64, 9: 81}
