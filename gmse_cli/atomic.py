"""Atomic file writes: a reader (or a crash) sees the old file or the new one, whole.

Every file uscl writes goes through :func:`write_atomic`: a temporary file beside the target is
written, fsync'd and renamed over it, then the folder is fsync'd so the rename itself survives
a crash. A failure removes the temporary file and leaves the target untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic", "write_text_atomic", "fsync_dir"]


def fsync_dir(folder: str | Path) -> None:
    """Make a rename (or a new file) in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    # The only way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes | Callable[[BinaryIO], None], *, mode: int | None = None) -> None:
    """Write ``data`` (bytes, or a function writing to a binary handle) to ``path`` atomically.

    ``mode``: the new file's permissions; default: a replaced file keeps its own, a new one gets
    the umask's default (mkstemp alone would make it 0600). Raises :class:`OSError`; the caller
    names the file in its message.
    """
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """:func:`write_atomic` of ``text`` encoded as UTF-8."""
    write_atomic(path, text.encode("utf-8"))
