"""A SIGKILL mid-write leaves ``.NAME.XXXXXXXX.tmp`` beside the target; the next successful
atomic write of that target removes those older than an hour, and nothing else.

Before: they stayed forever (a folder of checkpoints or cached GMSEs collected one per kill).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from gmse_cli.atomic import write_atomic

HOURS_AGO = time.time() - 2 * 3600


def _make(path: Path, *, old: bool = True) -> Path:
    path.write_bytes(b"half a file")
    if old:
        os.utime(path, (HOURS_AGO, HOURS_AGO))
    return path


def test_a_killed_writers_temporary_goes_with_the_next_write(tmp_path):
    """A real SIGKILL mid-write, then the file aged two hours, then a write of the same target."""
    target = tmp_path / "law.toml"
    code = (
        "import sys, time\n"
        "from gmse_cli.atomic import write_atomic\n"
        "def slow(handle):\n"
        "    handle.write(b'x' * 100); handle.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"write_atomic({str(target)!r}, slow)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline() == b"writing\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".law.toml.")]
    assert len(left) == 1 and not target.exists()  # what a SIGKILL leaves
    os.utime(left[0], (HOURS_AGO, HOURS_AGO))
    write_atomic(target, b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["law.toml"]
    assert target.read_bytes() == b"whole"


def test_only_stale_temporaries_of_that_target_go(tmp_path):
    target = tmp_path / "law.toml"
    stale = [_make(tmp_path / ".law.toml.abcd1234.tmp"), _make(tmp_path / ".law.toml.z_9y8x7w.tmp")]
    kept = [
        _make(tmp_path / ".law.toml.efgh5678.tmp", old=False),  # a write in progress, perhaps
        _make(tmp_path / ".law.toml.abc.tmp"),  # not mkstemp's 8 characters
        _make(tmp_path / ".law.toml.ABCD1234.tmp"),  # nor its alphabet
        _make(tmp_path / "law.toml.abcd1234.tmp"),  # no leading dot
        _make(tmp_path / ".law.toml.abcd1234.tmp.bak"),
        _make(tmp_path / ".law.tomlx.abcd1234.tmp"),  # another target's
        _make(tmp_path / ".other.toml.abcd1234.tmp"),
        _make(tmp_path / ".law.abcd1234.tmp"),
        _make(tmp_path / "notes.txt"),
    ]
    folder = tmp_path / ".law.toml.dir12345.tmp"
    folder.mkdir()
    os.utime(folder, (HOURS_AGO, HOURS_AGO))
    link = tmp_path / ".law.toml.link1234.tmp"
    link.symlink_to(kept[-1])
    os.utime(link, (HOURS_AGO, HOURS_AGO), follow_symlinks=False)
    write_atomic(target, b"law")
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and folder.is_dir() and link.is_symlink()


def test_a_failed_write_removes_nothing(tmp_path):
    target = tmp_path / "results.jsonl"
    stale = _make(tmp_path / ".results.jsonl.abcd1234.tmp")

    def fails(handle):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, fails)
    assert stale.exists()
    write_atomic(target, b"line\n")
    assert not stale.exists()


def test_a_target_through_a_link_cleans_beside_the_file_it_names(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "law.toml").write_bytes(b"old")
    (tmp_path / "law.toml").symlink_to(real / "law.toml")
    stale = _make(real / ".law.toml.abcd1234.tmp")
    write_atomic(tmp_path / "law.toml", b"new")
    assert not stale.exists() and (real / "law.toml").read_bytes() == b"new"


def test_a_name_cut_short_leaves_temporaries_alone(tmp_path):
    """A 250-byte name's temporaries are named from its first 241 bytes, which another target
    may share: none of them is removed."""
    target = tmp_path / ("a" * 250)
    stale = _make(tmp_path / f".{'a' * 241}.abcd1234.tmp")
    write_atomic(target, b"x")
    assert stale.exists()
