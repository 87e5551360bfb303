"""Constants remembered on disk (gmse_cli.memo): computed once, read back bit for bit, and never
trusted when damaged, keyed otherwise, or written by another algorithm version."""

from __future__ import annotations

import json
import math

import pytest


def test_a_number_is_computed_once_then_read_back_exactly():
    from gmse_cli.memo import remembered

    calls = []

    def compute():
        calls.append(1)
        return math.pi / 7

    assert remembered("test-memo", "key one", compute) == math.pi / 7
    assert remembered("test-memo", "key one", compute) == math.pi / 7
    assert len(calls) == 1
    assert remembered("test-memo", "key two", lambda: 2.5) == 2.5


@pytest.mark.parametrize("damage", [b"", b"{", b'{"key": "k", "value": "nan"}', b'{"key": "other", "value": 1.0}',
                                    b'{"value": 1.0}', b"[1, 2]", b'{"key": "k", "value": null}'])
def test_a_damaged_or_foreign_entry_is_a_miss_and_is_replaced(damage):
    from gmse_cli.memo import memo_dir, remembered

    remembered("test-damage", "k", lambda: 3.0)
    (entry,) = memo_dir("test-damage").glob("*.json")
    entry.write_bytes(damage)
    assert remembered("test-damage", "k", lambda: 4.0) == 4.0
    assert json.loads(entry.read_bytes()) == {"key": "k", "value": 4.0}


def test_an_unwritable_cache_costs_time_not_the_answer(monkeypatch):
    from gmse_cli import memo

    def no_folder(namespace):
        raise PermissionError("read-only home")

    monkeypatch.setattr(memo, "memo_dir", no_folder)
    assert memo.remembered("test-ro", "k", lambda: 5.0) == 5.0


def test_the_optimal_rms_constant_is_remembered_under_the_grids_version(monkeypatch):
    from gmse_cli.compress import grid_mse
    from gmse_cli.memo import memo_dir
    from gmse_cli.spec import Quantize

    stage = Quantize(grid="lut", values=(-1.5, -0.25, 0.25, 1.5), scale="rms", group="row")
    grid_mse._optimal_constant.cache_clear()
    searched = grid_mse.optimal_rms_constant(stage)
    stored = [json.loads(p.read_bytes()) for p in memo_dir("optimal-rms").glob("*.json")]
    mine = [e for e in stored if json.loads(e["key"])["grid"][1] == [-1.5, -0.25, 0.25, 1.5]]
    assert len(mine) == 1 and mine[0]["value"] == searched
    assert json.loads(mine[0]["key"])["grids"] == grid_mse.ALGORITHM_VERSION
    # A later process reads it instead of searching; another version searches again.
    grid_mse._optimal_constant.cache_clear()
    monkeypatch.setattr(grid_mse, "_search_optimal_constant", lambda key: pytest.fail("searched again"))
    assert grid_mse.optimal_rms_constant(stage) == searched
    grid_mse._optimal_constant.cache_clear()
    monkeypatch.setattr(grid_mse, "ALGORITHM_VERSION", grid_mse.ALGORITHM_VERSION + 1)
    monkeypatch.setattr(grid_mse, "_search_optimal_constant", lambda key: 0.5)
    assert grid_mse.optimal_rms_constant(stage) == 0.5
    grid_mse._optimal_constant.cache_clear()


def test_a_cache_folder_that_cannot_be_made(tmp_path, monkeypatch):
    # USCL_CACHE_DIR naming a file: `uscl search` and `uscl train` died in a FileExistsError
    # traceback. A cache that only saves time is still skipped; one a command needs is one line.
    from gmse_cli.compress.vq.store import load_codebook
    from gmse_cli.errors import DataError
    from gmse_cli.memo import remembered
    from gmse_cli.paths import cache_dir

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("USCL_CACHE_DIR", str(blocker))
    with pytest.raises(DataError, match=r"cannot use cache folder '.*a-file': .*set USCL_CACHE_DIR"):
        cache_dir()
    assert remembered("test-memo", "no cache", lambda: 2.5) == 2.5
    with pytest.raises(DataError, match="cannot use cache folder"):
        load_codebook("gaussian-d2-b3", with_array=True)
