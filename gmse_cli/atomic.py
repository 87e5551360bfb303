"""Atomic file writes: a reader (or a crash) sees the old file or the new one, whole.

Every file uscl writes goes through :func:`write_atomic`: a temporary file beside the target is
written, fsync'd and renamed over it, then the folder is fsync'd so the rename itself survives
a crash. A failure removes the temporary file and leaves the target untouched; so does a SIGTERM
that lands mid-write. A SIGKILL (or a power cut) mid-write leaves its temporary file,
``.NAME.XXXXXXXX.tmp``: a later successful write of the same target removes those of its own
name older than :data:`~gmse_cli.cleanup.STALE_TEMPORARY_SECONDS` (:mod:`gmse_cli.cleanup`: the folder is
listed once an hour per process).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# The clean-up of what killed writers leave lives in gmse_cli.cleanup; its names are here too, where
# callers have always found them.
from gmse_cli.cleanup import (
    STALE_TEMPORARY_SECONDS,
    remove_stale_folders,
    remove_stale_temporaries,
    sweep_cache_folder,
    temporary_stem,
)
from gmse_cli.errors import DataError
from gmse_cli.inputs import user_path
from gmse_cli.sigterm import sigterm_unwinds

__all__ = ["write_atomic", "write_text_atomic", "fsync_dir", "staging_folder", "check_output_path", "sigterm_cleans_up",
           "sweep_cache_folder", "remove_stale_folders", "MIN_FREE_BYTES", "STALE_TEMPORARY_SECONDS", "ON_WINDOWS",
           "windows_name_problem", "may_replace", "new_file_mode"]

MIN_FREE_BYTES = 1 << 20
"""An output's folder needs at least this much free space (1 MiB) where the file system says."""


ON_WINDOWS = os.name == "nt"
"""Whether output names are checked against Windows's rules (:func:`windows_name_problem`)."""

_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{port}{i}" for port in ("COM", "LPT") for i in range(1, 10))})


def windows_name_problem(name: str) -> str | None:
    """Why Windows would not hold a file called ``name`` under that name, or None: a trailing dot
    or space (silently dropped: 'law.' is written as 'law'), a character it refuses (``<>:"|?*``,
    control characters; ':' names an NTFS stream, a hidden part of another file), or a device
    name whatever its extension ('NUL', 'aux.json': the write goes to the device)."""
    if name != name.rstrip(" ."):
        return "Windows drops a trailing dot or space from a file name"
    refused = sorted({ch for ch in name if ch in '<>:"|?*' or ord(ch) < 32})
    if refused:
        return f"Windows does not allow {' '.join(map(repr, refused))} in a file name"
    device = name.split(".")[0].rstrip(" ").upper()
    if device in _WINDOWS_DEVICES:
        return f"'{device}' is a device on Windows, whatever the extension"
    return None


def fsync_dir(folder: str | Path) -> None:
    """Make a rename (or a new file) in ``folder`` durable, where a folder can be opened: not on
    Windows (a folder is no file there; NTFS journals the rename itself) nor in a folder the user
    may write but not read (mode 0o300). The rename has happened by then: failing the write for
    want of this last step would report a file that is in place as not written."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    # The only way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions the umask gives a new file (0o666 less the umask): for a file a library
    makes with its own mode (safetensors' 0600) that uscl then sets as any new file's."""
    return 0o666 & ~_umask()


def staging_folder(parent: str | Path, *, prefix: str) -> Path:
    """A new empty folder in ``parent`` to fill and rename into place, with the permissions any
    new folder gets under the umask (mkdtemp alone makes it 0700: a kept model or a shared token
    cache that only its writer can open)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    # the setgid bit a group's shared folder passes to a new folder stays (chmod alone cleared
    # it: files in a checkpoint then took each writer's own group, not the shared one)
    os.chmod(folder, (0o777 & ~_umask()) | (folder.stat().st_mode & stat.S_ISGID))
    return folder


def may_replace(path: str | Path) -> None:
    """Raise PermissionError unless this user may write the existing file ``path``. A rename
    needs only the folder's permission, so a file another user owns and this one may not write
    (0644 in a group's shared folder) was replaced anyway: taken over, the owner then locked
    out of it. As root (who may write anything) this never raises."""
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


def check_output_path(
    path: str | Path, *, what: str, error: type[Exception], folder: bool = False, parents: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Raise ``error`` (one line naming ``what`` and ``path``) unless ``path`` can be written.

    Run before any long work: the parent folder exists and is writable, the target is not a
    folder (or, with ``folder=True``, is one or can be made; with ``parents=True`` missing
    parent folders will be made, so the nearest existing one is checked), not a device node or FIFO (an
    atomic write would replace it with a regular file), not one of the command's ``inputs`` or
    other outputs (the write would replace what was read, or one output the other), and the
    file system has :data:`MIN_FREE_BYTES` free where it reports it; on Windows, the name is one
    Windows keeps as given (:func:`windows_name_problem`).
    """
    try:
        path = user_path(path)  # '--out=~/law.toml' (no shell expands '~' after '=') as the inputs read it
    except DataError as exc:
        raise error(str(exc).replace("cannot read", f"cannot write {what}", 1)) from None
    if ON_WINDOWS and (problem := windows_name_problem(path.name)):
        raise error(f"cannot write {what} '{path}': {problem} (choose another name)")
    for source in inputs:
        if _same_file(path, _expanded(source)):
            raise error(f"cannot write {what} '{path}': it is also '{source}', which this command reads or "
                        "writes (choose another path)")
    # A file target that is a symbolic link is written where the link points (write_atomic):
    # checked there, so a link into a read-only folder, or one whose folder is gone, fails now.
    target = path
    try:
        if not folder and path.is_symlink():  # (ENAMETOOLONG raises here: caught below)
            target = Path(os.path.realpath(path))
        info = target.stat() if target.exists() else None
        if folder and info is not None and not stat.S_ISDIR(info.st_mode):
            raise error(f"cannot write {what} '{path}': it exists and is not a folder")
        if not folder and info is not None and stat.S_ISDIR(info.st_mode):
            raise error(f"cannot write {what} '{path}': it is a folder (name a file)")
        if not folder and info is not None and not stat.S_ISREG(info.st_mode):
            raise error(f"cannot write {what} '{path}': it is a device or a pipe, not a regular file")
        if not folder and info is not None:
            may_replace(target)  # a file this user may not write: refused now, not after the work
        parent = path if folder else target.parent
        # missing folders are made on the way to the path given, not to a link's target: a link whose
        # target folder is gone is refused now, not after the work
        while (folder or (parents and target is path)) and not parent.exists() and parent != parent.parent:
            if parent.is_symlink():  # dangling (an unmounted disk) or a loop: no folder can be made there
                raise error(f"cannot write {what} '{path}': '{parent}' is a broken symbolic link")
            parent = parent.parent  # the folder (and missing parents) will be made
        if not parent.is_dir():
            link = f" (the symbolic link's target '{target}')" if target is not path else ""
            raise error(f"cannot write {what} '{path}': folder '{parent}' does not exist{link}")
        # a real write: permissions, a read-only mount, a full inode table; named as the write's
        # temporary file will be, whose path is 14 bytes longer than the target's (PATH_MAX)
        _probe(parent, target.name if not folder and parent == target.parent else "uscl-probe")
        free = shutil.disk_usage(parent).free
    except OSError as exc:  # permission denied, a read-only mount, a name too long
        raise error(f"cannot write {what} '{path}': {(exc.strerror or str(exc)).lower()} (choose another path)") from None
    if free < MIN_FREE_BYTES:
        raise error(f"cannot write {what} '{path}': {os.strerror(errno.ENOSPC).lower()} ({free} bytes free)")
    return path


def _expanded(source: str | Path) -> Path:
    """An input as it is read: a leading '~' the home folder (a name without one stays as it is)."""
    try:
        return user_path(source)
    except DataError:
        return Path(source)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # links and other spellings of one file
    except OSError:  # one of them does not exist (yet): compare the names
        # realpath, not Path.resolve: a symlink loop is then a name, not a RuntimeError (Python < 3.13)
        return os.path.realpath(a) == os.path.realpath(b)


def _probe(folder: Path, name: str) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{temporary_stem(name)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(name)


@contextmanager
def sigterm_cleans_up() -> Iterator[None]:
    """While the body runs, SIGTERM unwinds it (so ``except BaseException`` removes the temporary
    file) and then kills the process as SIGTERM would have (:func:`~gmse_cli.sigterm.sigterm_unwinds`)."""
    with sigterm_unwinds():
        yield


def write_atomic(
    path: str | Path, data: bytes | Callable[[BinaryIO], None], *, mode: int | None = None, durable: bool = True
) -> None:
    """Write ``data`` (bytes, or a function writing to a binary handle) to ``path`` atomically.

    ``mode``: the new file's permissions; default: a replaced file keeps its own, a new one gets
    the umask's default (mkstemp alone would make it 0600); a replaced file keeps its group too
    where this user is in it, and one this user may not write is refused (PermissionError,
    :func:`may_replace`), never taken over. ``durable=False`` skips the two
    fsyncs (a few ms each): for caches, whose readers treat a file a crash left empty or
    damaged as a miss. Raises :class:`OSError`; the caller names the file in its message.
    Once the target is in place, temporary files of it that a killed writer left an hour or
    more ago go (:func:`~gmse_cli.cleanup.remove_stale_temporaries`).
    """
    path = Path(path)
    if path.is_symlink():
        # A link (a dotfile kept in a repository, a shared results file) keeps pointing where
        # it did: the file it names is replaced, not the link.
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        # Replacing a device node or a FIFO with a regular file would be a silent loss.
        raise OSError(errno.EEXIST, "not a regular file", str(path))
    may_replace(path)
    old = path.stat() if path.exists() else None
    if mode is None:
        mode = old.st_mode & 0o7777 if old is not None else 0o666 & ~_umask()
    with sigterm_cleans_up():
        fd, tmp = tempfile.mkstemp(prefix=f".{temporary_stem(path.name)}.", suffix=".tmp", dir=path.parent)
        try:
            if old is not None and hasattr(os, "fchown") and old.st_gid != os.fstat(fd).st_gid:
                # a replaced file keeps its group where this user is in it (a shared results
                # file in a folder without the setgid bit took the writer's own group, and its
                # group-write bit then no longer let the group write it); before the chmod
                # (a chown may clear the setgid bit)
                with contextlib.suppress(OSError):
                    os.fchown(fd, -1, old.st_gid)
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13: chmod by name below
                os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                if isinstance(data, bytes | bytearray):
                    handle.write(data)
                else:
                    data(handle)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            if not hasattr(os, "fchmod"):
                os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    remove_stale_temporaries(path)
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    """:func:`write_atomic` of ``text`` encoded as UTF-8."""
    write_atomic(path, text.encode("utf-8"))
