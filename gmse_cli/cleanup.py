"""What killed writers leave, cleared: the temporary files and staging folders of writes that
never finished.

:func:`~gmse_cli.atomic.write_atomic` writes ``.NAME.XXXXXXXX.tmp`` beside its target and renames
it over the target; a SIGKILL (or a power cut) mid-write leaves that temporary file for ever. A
later successful write of the same target removes those of its own name older than
:data:`STALE_TEMPORARY_SECONDS` (:func:`remove_stale_temporaries`; the folder is listed once an
hour per process); uscl's cache folders are swept of any name (:func:`sweep_cache_folder`), and a
folder written whole clears the staging folders a killed writer left (:func:`remove_stale_folders`).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from pathlib import Path

from gmse_cli.inputs import MAX_NAME_LENGTH

__all__ = ["temporary_stem", "remove_stale_temporaries", "sweep_cache_folder", "remove_stale_folders",
           "STALE_TEMPORARY_SECONDS"]


_TEMPORARY_EXTRA = len("..") + 8 + len(".tmp")
"""Bytes a temporary name adds to its target's: the dots, mkstemp's 8 random characters, '.tmp'."""


def temporary_stem(name: str) -> str:
    """``name`` cut to leave its temporary file a legal name: a target of 242 to 255 bytes (as
    long as a file name can be) took '.NAME.XXXXXXXX.tmp' past 255 and could not be written."""
    raw = os.fsencode(name)
    return os.fsdecode(raw[: MAX_NAME_LENGTH - _TEMPORARY_EXTRA]) if len(raw) + _TEMPORARY_EXTRA > MAX_NAME_LENGTH else name


STALE_TEMPORARY_SECONDS = 3600
"""A temporary file of a target older than this (by its last write) is a killed writer's: no
write of uscl's pauses an hour between two writes to its file."""

_RANDOM_PART = "[a-z0-9_]{8}"
"""What mkstemp puts between the prefix and the suffix (tempfile's 8 characters of this set)."""


_ANY_TEMPORARY = re.compile(rf"\.(.+)\.{_RANDOM_PART}\.tmp")

_TEMPORARIES: dict[str, tuple[float, dict[str, list[str]]]] = {}
"""Per folder this process has written in: when it was scanned (monotonic) and the names in it
that look like a temporary file (``.NAME.XXXXXXXX.tmp``), by NAME."""


def _list_temporaries(folder: str) -> dict[str, list[str]]:
    """The names in ``folder`` that look like a temporary file (``.NAME.XXXXXXXX.tmp``), by NAME;
    empty where the folder cannot be listed."""
    found: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if match := _ANY_TEMPORARY.fullmatch(entry.name):
                    found.setdefault(match[1], []).append(entry.name)
    except OSError:
        pass
    return found


def _still_there(folder: str, names: list[str]) -> list[str]:
    """Remove the regular files ``names`` in ``folder`` that no write has touched for
    :data:`STALE_TEMPORARY_SECONDS`; the names that stay (young: a write in progress, perhaps;
    links, folders, anything that fails to go)."""
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    kept = []
    for name in names:
        try:
            info = os.lstat(os.path.join(folder, name))
            if not (stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff):
                kept.append(name)
                continue
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            pass
        except OSError:
            kept.append(name)
    return kept


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of ``path`` (``.NAME.XXXXXXXX.tmp``, exactly as
    :func:`~gmse_cli.atomic.write_atomic` names them) that no write has touched for an hour; a name cut short
    (:func:`temporary_stem`) could be another target's, so its temporaries are left alone, as
    are links, folders and anything that fails to go. Only the target's own: a user's folder
    may hold another program's files of that shape.

    The folder is listed once an hour per process, not on every write (listing a cache folder
    of 100,000 entries took some 50 ms a write): the temporaries seen are kept by target name,
    and each write of a target looks at its own, which go once an hour old. One a writer
    killed after the listing left is seen by the next listing, so it goes within two hours."""
    stem = temporary_stem(path.name)
    if stem != path.name:
        return
    folder = os.path.abspath(path.parent)
    now = time.monotonic()
    scanned = _TEMPORARIES.get(folder)
    if scanned is None or now - scanned[0] >= STALE_TEMPORARY_SECONDS:
        scanned = _TEMPORARIES[folder] = (now, _list_temporaries(folder))
    if kept := _still_there(folder, scanned[1].pop(stem, [])):
        scanned[1][stem] = kept


_SWEPT: set[str] = set()
"""Cache folders this process has swept (:func:`sweep_cache_folder`): once each is enough."""


def sweep_cache_folder(folder: str | Path) -> None:
    """Remove the temporary files of any name (``.NAME.XXXXXXXX.tmp``) an hour old or more from
    ``folder``, one of uscl's own cache folders; once per folder per process. A cache entry,
    once whole, is read and never written again (a rewrite of the same bytes is skipped), so
    the clean-up after a write of the same file (:func:`~gmse_cli.atomic.write_atomic`) never came for the
    temporary file a killed writer left beside it: each SIGKILL mid-write left one for ever.

    At most one process an hour scans a folder: the scan's time is stamped on a file beside
    it (``.NAME.swept``, beside rather than in it, so the folder holds its entries alone), and
    while that stamp is under an hour old a process skips the scan (one stat). A scan reads
    every name in the folder, some 50 ms a 100,000-entry cache on every command that reads it;
    a temporary file only goes once it is an hour old, so it now goes within two hours. The
    scan is also the hour's listing of :func:`~gmse_cli.atomic.write_atomic`'s clean-up in this process (the
    temporaries it leaves, by target), so a write into the folder lists it no second time.
    The two hours are counted apart: a stamp file may lie beside uscl's own cache folders, not
    beside a folder of the user's, where write_atomic counts its hour in memory."""
    key = os.path.abspath(folder)
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    folder = Path(folder)
    if _stamped_within_the_hour(folder.parent / f".{folder.name}.swept"):
        return
    now = time.monotonic()
    left = {stem: kept for stem, names in _list_temporaries(key).items() if (kept := _still_there(key, names))}
    _TEMPORARIES[key] = (now, left)


def _stamped_within_the_hour(stamp: Path) -> bool:
    """Whether ``stamp`` was touched less than :data:`STALE_TEMPORARY_SECONDS` ago (either side
    of now: a clock put back leaves no stamp for ever fresh); if not, touch it now. Where no
    stamp can be written (a parent folder this user may not write) every process scans, as
    before: slower, never wrong."""
    now = time.time()
    try:
        if abs(now - stamp.stat().st_mtime) < STALE_TEMPORARY_SECONDS:
            return True
    except OSError:
        pass  # no stamp yet
    try:
        stamp.touch()
    except OSError:
        pass
    return False


def remove_stale_folders(parent: str | Path, pattern: re.Pattern[str]) -> None:
    """Remove the folders in ``parent`` whose names ``pattern`` matches whole (the staging or
    set-aside folders of a folder written whole, :func:`~gmse_cli.atomic.staging_folder`) that neither they nor
    a file directly in them has changed for :data:`STALE_TEMPORARY_SECONDS`: a writer killed
    mid-write (a token cache of gigabytes, a checkpoint) left them for ever. Links and anything
    that fails to go stay."""
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    try:
        with os.scandir(parent) as entries:
            candidates = [entry for entry in entries if pattern.fullmatch(entry.name)
                          and entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in candidates:
        try:
            newest = entry.stat(follow_symlinks=False).st_mtime
            with os.scandir(entry.path) as inside:  # a file being written keeps its folder fresh
                for item in inside:
                    newest = max(newest, item.stat(follow_symlinks=False).st_mtime)
        except OSError:
            continue
        if newest < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
