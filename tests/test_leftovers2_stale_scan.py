"""write_atomic listed the target's whole folder on every write to find a killed writer's
temporaries (some 50 ms a write beside 100,000 cache entries); it now lists a folder once an
hour per process and still removes every hour-old temporary of the target it writes."""

from __future__ import annotations

import os
import time

from gmse_cli import atomic, cleanup
from gmse_cli.atomic import STALE_TEMPORARY_SECONDS, write_atomic

HOURS_AGO = time.time() - 2 * 3600


def _aged(path, when=HOURS_AGO):
    path.write_bytes(b"half")
    os.utime(path, (when, when))
    return path


def test_many_writes_in_one_folder_list_it_once(tmp_path, monkeypatch):
    listed = []
    real = os.scandir

    def counting(folder):
        listed.append(os.fspath(folder))
        return real(folder)

    monkeypatch.setattr(atomic.os, "scandir", counting)
    stale = [_aged(tmp_path / f".f{i}.json.abcd1234.tmp") for i in range(50)]
    for i in range(50):
        write_atomic(tmp_path / f"f{i}.json", b"{}", durable=False)
    assert listed.count(str(tmp_path)) == 1
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{i}.json" for i in range(50))


def test_a_temporary_seen_fresh_goes_once_it_is_an_hour_old(tmp_path):
    target = tmp_path / "results.jsonl"
    young = _aged(tmp_path / ".results.jsonl.abcd1234.tmp", when=time.time())
    write_atomic(target, b"1\n")
    assert young.exists()  # a write in progress, perhaps
    os.utime(young, (HOURS_AGO, HOURS_AGO))  # ... whose writer was killed
    write_atomic(target, b"2\n")
    assert not young.exists()


def test_one_left_after_the_listing_goes_once_the_listing_is_an_hour_old(tmp_path, monkeypatch):
    target = tmp_path / "law.toml"
    write_atomic(target, b"1")
    later = _aged(tmp_path / ".law.toml.abcd1234.tmp")
    other = _aged(tmp_path / ".other.toml.abcd1234.tmp")
    write_atomic(target, b"2")
    assert later.exists()  # the folder was listed before it came
    start = time.monotonic()
    monkeypatch.setattr(cleanup.time, "monotonic", lambda: start + STALE_TEMPORARY_SECONDS + 1)
    write_atomic(target, b"3")
    assert not later.exists() and other.exists()  # another target's stays
