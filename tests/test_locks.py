"""Locks degrade to none where the file system takes none (Lustre without flock, some FUSE and
SMB mounts answer flock() with ENOLCK/ENOSYS/EOPNOTSUPP): every writer goes on unlocked. Before
gmse_cli.locks, a sweep's results file and a search's output folder raised there, after the
work: a finished run was not recorded."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gmse_cli import locks

pytestmark = pytest.mark.skipif(not locks.AVAILABLE, reason="no flock on this platform")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(params=[errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP])
def no_locks(request, monkeypatch):
    def refuse(*args):
        raise OSError(request.param, "no locks on this file system")

    monkeypatch.setattr(locks.fcntl, "flock", refuse)


def test_a_results_file_on_a_file_system_without_locks_gets_its_record(tmp_path, no_locks):
    from gmse_cli.training.results import append_record, finished_keys, load_records

    record = load_records(EXAMPLES / "cpu-law.jsonl")[0]
    out = tmp_path / "runs.jsonl"
    assert append_record(out, record) is True
    assert finished_keys(out) == {record.run_key}


def test_a_search_folder_on_a_file_system_without_locks_is_written(tmp_path, no_locks):
    from gmse_cli.search import outfolder

    written = outfolder.replace_files(tmp_path, {"00-a.toml": b"a"})
    assert [p.read_bytes() for p in written] == [b"a"]


def test_other_lock_errors_still_raise(tmp_path, monkeypatch):
    def broken(*args):
        raise OSError(errno.EBADF, "bad file descriptor")

    monkeypatch.setattr(locks.fcntl, "flock", broken)
    with open(tmp_path / "f", "w") as f, pytest.raises(OSError), locks.held(f):
        pass


def test_a_lock_held_by_another_open_file_is_busy_without_waiting(tmp_path):
    # flock locks belong to an open file: a second open of the same file, even in this process,
    # is another holder.
    path = tmp_path / "claim.lock"
    with open(path, "a+") as first, open(path, "a+") as second:
        with locks.held(first, wait=False) as mine:
            assert mine
            with locks.held(second, wait=False) as theirs:
                assert not theirs
        with locks.held(second, wait=False) as theirs:
            assert theirs


def test_a_search_folder_this_user_cannot_read_is_written_unlocked(tmp_path, monkeypatch):
    # A folder of mode 0o300 (write and search, no read) cannot be opened to lock it; as root the
    # mode does not stop an open, so the refusal is made here.
    import os

    from gmse_cli.search import outfolder

    real_open = os.open

    def no_read(path, flags, *args):
        if os.fspath(path) == os.fspath(tmp_path) and flags == os.O_RDONLY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_read)
    written = outfolder.replace_files(tmp_path, {"00-a.toml": b"a"})
    assert [p.read_bytes() for p in written] == [b"a"]


def test_a_lock_file_is_made_writable_else_opened_read_only(tmp_path, monkeypatch):
    import fcntl
    import os

    path = tmp_path / "x.lock"
    fd = locks.open_lock_file(path)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR and path.exists()
    finally:
        os.close(fd)
    real = os.open

    def refuse_writing(name, flags, *mode):  # another user's lock file, as this user sees it
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(errno.EACCES, "permission denied", name)
        return real(name, flags, *mode)

    monkeypatch.setattr(locks.os, "open", refuse_writing)
    fd = locks.open_lock_file(path)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        with locks.held(fd) as mine:  # flock takes a read-only file too
            assert mine
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):  # no such folder: the caller decides
        locks.open_lock_file(tmp_path / "gone" / "x.lock")
