"""A lock file this user may only read is opened read-only and flocked (training.results,
kernel_cache): flock takes a read-only file on a local file system, but NFS emulates flock with
a byte-range lock, and an exclusive one there needs a file open for writing (flock(2): EBADF).
The append of a finished run then failed ('Bad file descriptor') on the shared folders those
read-only lock files are for; it now goes on unlocked, as where a file system takes no locks."""

from __future__ import annotations

import errno
import fcntl
import os

import pytest

from gmse_cli import locks


def _nfs_flock(real):
    """flock as an NFS client gives it: an exclusive lock on a file open read-only is EBADF."""
    def flock(file, operation):
        fd = file if isinstance(file, int) else file.fileno()
        if operation & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(file, operation)
    return flock


def test_an_exclusive_lock_on_a_read_only_file_over_nfs_goes_on_unlocked(tmp_path, monkeypatch):
    monkeypatch.setattr(locks.fcntl, "flock", _nfs_flock(fcntl.flock))
    lock = tmp_path / "runs.jsonl.lock"
    lock.write_text("")
    with open(lock) as handle, locks.held(handle) as go_on:
        assert go_on is True
    with open(lock, "a+") as handle, locks.held(handle) as go_on:  # a writable one still locks
        assert go_on is True


def test_a_bad_descriptor_for_a_shared_lock_is_still_an_error(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("")
    fd = os.open(lock, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as err, locks.held(fd, exclusive=False):
        pass
    assert err.value.errno == errno.EBADF
