"""The sweep of a cache folder's stale temporary files scans the folder at most once an hour.

A scan reads every name in the folder (a cache of 100,000 GMSE entries: some 50 ms), and it
ran in every process that read the cache; now a stamp beside the folder records the last scan
and processes within the hour skip it. Each step runs in a fresh process (the sweep is once
per folder per process anyway).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures; HF offline)

REPO = Path(__file__).resolve().parents[1]
TWO_HOURS = 7200


def _sweep(folder: Path) -> None:
    code = "import sys; from gmse_cli.atomic import sweep_cache_folder; sweep_cache_folder(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def _set_time(path: Path, when: float) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


def _stale_temporary(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"{")
    _set_time(path, time.time() - TWO_HOURS)
    return path


def test_a_second_process_within_the_hour_skips_the_scan_and_one_after_it_sweeps(tmp_path):
    folder = tmp_path / "gmse"
    folder.mkdir()
    first = _stale_temporary(folder, ".a.json.abcd1234.tmp")
    _sweep(folder)
    assert not first.exists()  # no stamp yet: the first process scans
    (stamp,) = set(tmp_path.iterdir()) - {folder}  # the stamp lies beside the folder, not in it
    assert sorted(p.name for p in folder.iterdir()) == []

    second = _stale_temporary(folder, ".b.json.efgh5678.tmp")
    _sweep(folder)
    assert second.exists()  # scanned under an hour ago: left for the next scan

    _set_time(stamp, time.time() - TWO_HOURS)
    _sweep(folder)
    assert not second.exists()
    assert abs(stamp.stat().st_mtime - time.time()) < 600  # this scan stamped anew


def test_a_stamp_from_the_future_does_not_stop_the_sweep(tmp_path):
    folder = tmp_path / "gmse"
    folder.mkdir()
    _sweep(folder)
    (stamp,) = set(tmp_path.iterdir()) - {folder}
    _set_time(stamp, time.time() + 10 * TWO_HOURS)  # the clock was put back since
    left = _stale_temporary(folder, ".c.json.ijkl9012.tmp")
    _sweep(folder)
    assert not left.exists()


def test_a_write_after_the_sweep_lists_the_folder_no_second_time(tmp_path, monkeypatch):
    from gmse_cli import atomic

    folder = tmp_path / "gmse"
    folder.mkdir()
    stale = _stale_temporary(folder, ".a.json.abcd1234.tmp")
    young = folder / ".b.json.efgh5678.tmp"
    young.write_bytes(b"{")  # a write in progress, perhaps
    listed: list[str] = []
    scandir = os.scandir

    def counting(path):
        listed.append(os.path.abspath(path))
        return scandir(path)

    monkeypatch.setattr(atomic.os, "scandir", counting)
    atomic.sweep_cache_folder(folder)
    atomic.write_atomic(folder / "b.json", b"{}")
    atomic.write_atomic(folder / "c.json", b"{}")
    assert listed == [str(folder)]  # the sweep's listing served the writes' clean-up too
    assert not stale.exists() and young.exists()
    _set_time(young, time.time() - TWO_HOURS)
    atomic.write_atomic(folder / "b.json", b"{}")  # the young one the sweep saw, by its target
    assert not young.exists()
