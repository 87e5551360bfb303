"""A folder of files that always describes one run: the latest one to finish writing.

A run's files are first written beside their final names under a hidden prefix (each one
atomically), then a manifest naming them with their SHA-256 digests is written atomically:
that rename commits the run. The staged files are then renamed into place, and the files the
previous run's manifest named that this run did not write are removed, but only while their
bytes are still the ones uscl wrote (a file a user edited or made is never removed). A crash
before the commit leaves the previous run whole (its staged leftovers are removed by the next
run); a crash after it leaves the new run whole on disk, and the next run that writes into the
folder finishes moving it into place before anything else. Two runs writing one folder at once
take turns (a lock on the folder): else one run's clean-up deletes the files the other staged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from gmse_cli import locks
from gmse_cli.atomic import fsync_dir, sigterm_cleans_up, write_atomic

__all__ = ["MANIFEST", "replace_files"]

MANIFEST = ".uscl-search.json"
"""The manifest's name in the folder: ``{"files": {name: sha256}}`` of the latest run, plus
``"previous"`` while the run is being moved into place."""

_STAGED = ".uscl-staged."  # prefix of a file written but not yet committed or moved


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # damaged: nothing it names can be shown to be ours
        return None
    return value if isinstance(value, dict) and isinstance(value.get("files"), dict) else None


def _plain(name: object) -> bool:
    # a manifest names files in its own folder; anything else is not one uscl wrote
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def _remove_if_ours(path: Path, digest: object) -> None:
    try:
        if _plain(path.name) and path.is_file() and not path.is_symlink() and _digest(path.read_bytes()) == digest:
            path.unlink()
    except OSError:
        pass  # unreadable or already gone: left as it is


def _finish(folder: Path) -> None:
    """Complete a committed run a crash interrupted, and drop uncommitted staged files."""
    manifest = _manifest(folder)
    moving = manifest is not None and isinstance(manifest.get("previous"), dict)
    for staged in folder.glob(f"{_STAGED}*"):
        if not (moving and staged.name.removeprefix(_STAGED) in manifest["files"]):
            staged.unlink(missing_ok=True)  # from a run that never committed
    for pattern in (f".{_STAGED}*.tmp", f".{MANIFEST}.*.tmp"):  # write_atomic's, of a run killed mid-write
        for partial in folder.glob(pattern):
            partial.unlink(missing_ok=True)
    if not moving:
        return
    for name in filter(_plain, manifest["files"]):
        staged = folder / f"{_STAGED}{name}"
        if staged.is_file():
            os.replace(staged, folder / name)
    fsync_dir(folder)
    for name, digest in manifest["previous"].items():
        if _plain(name) and name not in manifest["files"]:
            _remove_if_ours(folder / name, digest)
    write_atomic(folder / MANIFEST, json.dumps({"files": manifest["files"]}, indent=1).encode())


def _check_targets(folder: Path, files: Mapping[str, bytes]) -> None:
    """Raise :class:`OSError` if a final name is taken by a folder, device or FIFO: moving a
    staged file there fails (or replaces a device) only after the commit, which would leave
    the run half moved and the previous one overwritten. Checked before anything is written."""
    for name in files:
        path = folder / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            kind = "a folder" if stat.S_ISDIR(mode) else "a device or a pipe, not a regular file"
            raise OSError(errno.EEXIST, f"it is {kind} (move it away)", str(path))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file left in it); released when the
    process ends, however it ends. Unlocked where a folder cannot be locked: Windows (no flock,
    and a folder cannot be opened as a file), a folder this user may write but not read, or a
    file system that takes no locks."""
    try:
        fd = os.open(folder, os.O_RDONLY) if locks.AVAILABLE else None
    except PermissionError:
        fd = None
    if fd is None:
        yield
        return
    try:
        with locks.held(fd):
            yield
    finally:
        os.close(fd)


def replace_files(folder: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Make ``folder`` hold ``files`` (plain names -> bytes) as the latest run (module
    docstring); return their paths. Files uscl did not write stay. Raises :class:`OSError`; a
    run that fails (or gets SIGTERM) before its commit removes the files it staged."""
    with sigterm_cleans_up(), _locked(folder):
        _finish(folder)
        _check_targets(folder, files)
        previous = (_manifest(folder) or {"files": {}})["files"]
        committed = {"files": {name: _digest(data) for name, data in files.items()}, "previous": previous}
        staged: list[Path] = []
        try:
            for name, data in files.items():
                final = folder / name
                mode = final.stat().st_mode & 0o7777 if final.is_file() else None  # a replaced file keeps its mode
                staged.append(folder / f"{_STAGED}{name}")
                write_atomic(staged[-1], data, mode=mode)
            write_atomic(folder / MANIFEST, json.dumps(committed, indent=1).encode())
        except BaseException:
            if _manifest(folder) != committed:  # not committed: the previous run stays, alone
                for path in staged:
                    path.unlink(missing_ok=True)
            raise
        _finish(folder)
    return [folder / name for name in files]
