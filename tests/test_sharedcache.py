"""A cache and outputs shared by several users and jobs (a cluster's group folders): the modes,
group and owner of what uscl writes, and what a user who may not write something gets.

Permission checks do not apply to root (CAP_DAC_OVERRIDE): as root, the tests that need them run
their process with those capabilities dropped (``setpriv``), else they are skipped. A file
"another user" made is simulated by a file whose mode denies writing to its owner.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest
import numpy as np
import pytest

from gmse_cli import memo, progress
from gmse_cli.atomic import check_output_path, staging_folder, write_atomic
from gmse_cli.compress.vq.store import CodebookInfo, keep_codebook, save_codebook
from gmse_cli.gmse import cache as gmse_cache
from gmse_cli.gmse.stored import StoredGmse

REPO = Path(__file__).resolve().parents[1]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
DROP = "-dac_override,-dac_read_search,-fowner"
SETPRIV = shutil.which("setpriv")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _stored(key: str) -> StoredGmse:
    return StoredGmse(key=key, name="x", row_length=128, gmse=0.01, std_err=0.0, method="exact", samples=0,
                      seed=0, algorithms={})


def _info() -> CodebookInfo:
    return CodebookInfo(kind="gaussian", dim=2, index_bits=1, codewords=2, scale_constant=1.0, mse=0.5,
                        mse_samples=10, seed=0)


@pytest.mark.parametrize("mask", [0o077, 0o022, 0o002], ids=["077", "022", "002"])
def test_cache_entries_take_the_umask_mode(tmp_path, monkeypatch, umask, mask):
    # They were forced 0644: a group's cache under umask 002 got entries the group could not
    # write, a private one under 077 entries the world could read.
    umask(mask)
    expected = 0o666 & ~mask
    monkeypatch.setattr(memo, "memo_dir", lambda namespace: tmp_path)
    assert memo.remembered("ns", "key", lambda: 1.5) == 1.5
    assert [_mode(p) for p in tmp_path.glob("*.json")] == [expected]
    folder = tmp_path / "gmse"
    folder.mkdir()
    monkeypatch.setattr(gmse_cache, "gmse_cache_dir", lambda: folder)
    gmse_cache.write_cached(_stored("k1"))
    assert _mode(folder / "k1.json") == expected
    books = tmp_path / "codebooks"
    books.mkdir()
    save_codebook("cb", np.zeros((2, 2), np.float32), _info(), directory=books)
    assert {p.name: _mode(p) for p in books.iterdir()} == {"cb.npy": expected, "cb.json": expected}


@pytest.mark.parametrize("mask", [0o077, 0o002], ids=["077", "002"])
def test_a_replaced_file_keeps_its_mode_and_a_new_one_takes_the_umask(tmp_path, umask, mask):
    umask(mask)
    for old in (0o664, 0o600, 0o640):
        path = tmp_path / f"out{old:o}.jsonl"
        path.write_bytes(b"a\n")
        path.chmod(old)
        write_atomic(path, b"b\n")
        assert (path.read_bytes(), _mode(path)) == (b"b\n", old)
    write_atomic(tmp_path / "new.toml", b"x")
    assert _mode(tmp_path / "new.toml") == 0o666 & ~mask


def test_a_staging_folder_keeps_the_setgid_bit_of_a_shared_folder(tmp_path, umask):
    # chmod cleared the bit mkdir gave it: a checkpoint's files took each writer's own group.
    umask(0o002)
    shared = tmp_path / "group"
    shared.mkdir()
    shared.chmod(0o2775)
    if not shared.stat().st_mode & stat.S_ISGID:
        pytest.skip("this file system (or user) keeps no setgid bit on a folder")
    (shared / "plain").mkdir()
    assert _mode(shared / "plain") == 0o2775  # what mkdir itself gives
    assert _mode(staging_folder(shared, prefix=".ckpt.")) == 0o2775


def _another_group() -> int | None:
    if ROOT:
        return 65534 if os.getegid() != 65534 else 1
    others = [g for g in os.getgroups() if g != os.getegid()]
    return others[0] if others else None


@pytest.mark.skipif(not hasattr(os, "fchown"), reason="no groups on this platform")
def test_a_replaced_file_keeps_its_group(tmp_path):
    # In a folder without the setgid bit the new file took the writer's own group, so a shared
    # results file's group-write bit no longer let the group write it.
    group = _another_group()
    if group is None:
        pytest.skip("this user is in no second group")
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b"a\n")
    os.chown(path, -1, group)
    path.chmod(0o664)
    write_atomic(path, b"b\n")
    info = path.stat()
    assert (info.st_gid, stat.S_IMODE(info.st_mode), path.read_bytes()) == (group, 0o664, b"b\n")


def _as_another_user(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a process where permission checks apply (as root: without the
    capabilities that bypass them)."""
    prefix: list[str] = []
    if ROOT:
        if SETPRIV is None:
            pytest.skip("as root permission checks are bypassed, and setpriv is not here to drop them")
        prefix = [SETPRIV, f"--bounding-set={DROP}", f"--inh-caps={DROP}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
           "USCL_CACHE_DIR": str(tmp_path / "cache"), "NO_COLOR": "1", "COLUMNS": "200"}
    probe = subprocess.run([*prefix, sys.executable, "-c", "open('/proc/self/status').read()"], env=env,
                           capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot drop root's capabilities here: {probe.stderr.decode()[-200:]}")
    return subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_file_the_user_may_not_write_is_refused_not_taken_over(tmp_path):
    # A rename needs only the folder's permission: another user's 0644 file in a group-writable
    # folder was replaced, owned by the writer from then on, its owner locked out.
    path = tmp_path / "law.toml"
    path.write_bytes(b"old\n")
    path.chmod(0o444)
    done = _as_another_user("""
        import sys
        from gmse_cli.atomic import write_atomic
        try:
            write_atomic(sys.argv[1], b"new\\n")
        except PermissionError as exc:
            print("refused", exc.filename)
        """, tmp_path, str(path))
    assert done.stdout.split() == ["refused", str(path)], done.stderr
    assert path.read_bytes() == b"old\n" and _mode(path) == 0o444


def test_train_refuses_a_results_file_it_may_not_write_before_training(tmp_path):
    out = tmp_path / "runs.jsonl"
    out.write_text("")
    out.chmod(0o444)
    done = _as_another_user("""
        import sys
        from gmse_cli.cli import main
        sys.argv = ["uscl", "train", "--preset", "tiny", "--out", sys.argv[1], "--dry-run"]
        main()
        """, tmp_path, str(out))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"cannot write results file '{out}': permission denied" in lines[0]


def test_an_append_takes_a_lock_file_it_may_only_read(tmp_path):
    # Another user's lock file (0644 under umask 022) beside a group-writable results file: the
    # append failed once the run had trained.
    out = tmp_path / "runs.jsonl"
    out.write_text("")
    lock = tmp_path / "runs.jsonl.lock"
    lock.write_text("")
    lock.chmod(0o444)
    code = """
        import sys
        sys.path.insert(0, sys.argv[2])
        from conftest import run_record
        from gmse_cli.training.results import append_record, check_appendable
        check_appendable(sys.argv[1])
        print(append_record(sys.argv[1], run_record("a")))
        """
    done = _as_another_user(code, tmp_path, str(out), str(REPO / "tests"))
    assert done.stdout.split() == ["True"], done.stderr
    assert [json.loads(line)["run_key"] for line in out.read_text().splitlines()] == ["a"]
    lock.chmod(0)  # not even readable: one line, before any training
    done = _as_another_user("""
        import sys
        from gmse_cli.training.results import check_appendable
        from gmse_cli.errors import DataError
        try:
            check_appendable(sys.argv[1])
        except DataError as exc:
            print(exc)
        """, tmp_path, str(out))
    assert done.stdout.strip() == f"cannot append to results file {out}: its lock file runs.jsonl.lock: " \
        "permission denied (choose another path)", done.stderr


def test_a_read_only_cache_still_answers(tmp_path):
    cache = tmp_path / "cache"
    (cache / "ns").mkdir(parents=True)
    for folder in (cache / "ns", cache):
        folder.chmod(0o555)
    done = _as_another_user("""
        from gmse_cli import memo
        print(memo.remembered("ns", "key", lambda: 2.5))
        """, tmp_path)
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["2.5"], "")
    assert list((cache / "ns").iterdir()) == []


def test_two_processes_appending_at_once_lose_no_line(tmp_path):
    out = tmp_path / "runs.jsonl"
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[3])
        from conftest import run_record
        from gmse_cli.training.results import append_record
        for i in range(15):
            append_record(sys.argv[1], run_record(f"{sys.argv[2]}{i}"))
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(out), who, str(REPO / "tests")], env=env)
            for who in "ab"]
    assert [job.wait(timeout=120) for job in jobs] == [0, 0]
    keys = [json.loads(line)["run_key"] for line in out.read_bytes().decode().splitlines()]
    assert sorted(keys) == sorted(f"{who}{i}" for who in "ab" for i in range(15))


def test_a_full_disk_under_numbas_cache_costs_a_note_not_the_answer(tmp_path, monkeypatch, capsys):
    # numba raised the failed save out of the compilation: 'a write failed: no space left on
    # device', exit 2, for want of a cache.
    from numba.core import caching

    source = tmp_path / "sharedcache_kernel.py"
    source.write_text("from gmse_cli.kernel_cache import numba\n\n"
                      "@numba.njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    spec = importlib.util.spec_from_file_location("sharedcache_kernel", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", full)
    progress.clear_cache_note()
    assert module.twice(21) == 42
    assert module.twice(1.5) == 3.0  # a second kernel, a second failed save: no second note
    # and another cache failing on the same full disk adds no second note
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "replace", full)
    keep_codebook("cb", np.zeros((2, 2), np.float32), _info())
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    progress.clear_cache_note()
    assert len(notes) == 1 and "no space left on device" in notes[0], notes


def test_check_output_path_leaves_a_writable_file_alone(tmp_path):
    path = tmp_path / "law.toml"
    path.write_text("x")
    path.chmod(0o640)
    assert check_output_path(path, what="law file", error=ValueError) == path
    assert _mode(path) == 0o640 and path.read_text() == "x"


def test_a_kernel_index_lock_another_user_made_still_locks(tmp_path):
    # numba's index lock beside a group's shared kernel cache, 0644 from another user: the save
    # ran unlocked, open to the mixed-up index the lock is there to prevent.
    index = tmp_path / "kernel.nbi"
    lock = tmp_path / "kernel.nbi.lock"
    lock.write_text("")
    lock.chmod(0o444)
    done = _as_another_user("""
        import fcntl, sys
        from gmse_cli.kernel_cache import index_lock
        with index_lock(sys.argv[1], exclusive=True):
            other = open(sys.argv[1] + ".lock")
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("unlocked")
            except BlockingIOError:
                print("locked")
        """, tmp_path, str(index))
    assert done.stdout.split() == ["locked"], done.stderr


@pytest.mark.parametrize("mask", [0o077, 0o002], ids=["077", "002"])
def test_a_checkpoints_files_take_the_umask_mode(tmp_path, umask, mask):
    # safetensors made model.safetensors and optimizer.safetensors 0600 whatever the umask:
    # a group sharing checkpoints read their state.json but not their weights.
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    umask(mask)
    step = conftest.tiny_checkpoint(tmp_path / "run")
    modes = {p.name: _mode(p) for p in step.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~mask}, modes
    assert _mode(step) == 0o777 & ~mask
