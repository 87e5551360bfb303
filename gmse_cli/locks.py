"""Advisory file locks (``flock``) that degrade to none where none can be taken.

uscl locks to keep processes apart that share a file: numba's kernel cache, a sweep's results
file, a run a sweep claims, a search's output folder. Where the platform has no ``flock``
(Windows) or the file system takes none (Lustre mounted without flock, some FUSE and SMB mounts),
each goes on unlocked, as a single process would: refusing would lose the work for a protection
that only matters when two processes share the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import IO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "held", "open_lock_file"]

AVAILABLE = fcntl is not None
"""Whether this platform has ``flock`` at all."""

_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
"""What ``flock`` raises on a file system that takes no locks."""


def open_lock_file(path: str | os.PathLike[str]) -> int:
    """A descriptor of the lock file ``path``, made if absent (0666 less the umask), opened for
    writing, else read-only where this user may not write it: another user's lock file in a
    group's shared folder (a kernel cache, a results file). flock takes a read-only file too;
    over NFS it takes none, and the caller goes on unlocked (:func:`held`). Any other failure
    (no such folder, a read-only mount) raises OSError, each caller deciding what it means."""
    cloexec = getattr(os, "O_CLOEXEC", 0)  # (Windows has none: its descriptors are not inherited)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | cloexec)


@contextlib.contextmanager
def held(file: int | IO, *, exclusive: bool = True, wait: bool = True) -> Iterator[bool]:
    """Hold a lock on the open ``file`` (a descriptor or a file object) while inside; yield True
    when the caller may go on: the lock is held, or none can be taken here. With ``wait=False``
    yield False at once while another process holds it. Closing the file (or the process ending,
    however it ends) releases it too."""
    if fcntl is None:
        yield True
        return
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(file, mode)
    except BlockingIOError:
        yield False
        return
    except OSError as exc:
        # EBADF for an exclusive lock: NFS emulates flock with a byte-range lock, which needs a
        # file open for writing; a lock file this user may only read (another user's, in a
        # group's shared folder) takes none there, as on a file system without locks
        if exc.errno not in _NO_LOCKS and not (exc.errno == errno.EBADF and exclusive and _read_only(file)):
            raise
        yield True
        return
    try:
        yield True
    finally:
        fcntl.flock(file, fcntl.LOCK_UN)


def _read_only(file: int | IO) -> bool:
    """Whether ``file`` is open for reading only (False for a descriptor that is no open file)."""
    try:
        fd = file if isinstance(file, int) else file.fileno()
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except (OSError, ValueError):
        return False
