"""numba, with its on-disk kernel cache made safe for processes that fill it at once.

numba keeps the compiled versions of one kernel in one index file that each process reads,
extends and rewrites without a lock, naming each new version's data file after the index's
size as that process read it. Two processes compiling two versions at once (two signatures, or
two of uscl's per-grid kernels, which share their source) can both pick ``.1.nbc``; the index
then names one version's key and the file holds the other's machine code, which numba loads
without checking: a kernel for one grid answered for another, with wrong numbers, for every later
process, until the cache was deleted. ``pytest -n 2`` on a fresh machine, or two uscl commands
started together after an install, is enough.

Importing this module wraps numba's cache-file ``save`` in an exclusive ``flock`` on a lock file
beside the index, and ``load`` in a shared one, so an index and its data files always change
together. Every module that compiles a cached kernel imports numba from here. The lock is
advisory and per index; where no lock file can be made (a read-only folder numba cannot cache
in anyway), the file system takes no locks, or the platform has no ``flock`` (Windows), numba
runs as it always did.

numba caches beside the modules, else in ``~/.cache/numba`` (``$NUMBA_CACHE_DIR`` first); where
none of them is writable (a read-only install and home folder) it raised "cannot cache function
...: no locator available" when a module with a cached kernel was imported. Importing this
module adds a last folder: a private one of the process's own (``uscl-numba-*`` in the temporary
folder, removed at exit), so kernels compile in each process there.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numba
from numba.core import caching

from gmse_cli import locks

__all__ = ["numba", "index_lock", "variant"]


@contextlib.contextmanager
def index_lock(index_path: str, *, exclusive: bool) -> Iterator[None]:
    """Hold a lock on ``INDEX.lock`` beside numba's cache index ``index_path`` (exclusive to
    change the index and its data files, shared to read them); no lock where none can be taken
    (Windows, which has no flock)."""
    if not locks.AVAILABLE:
        yield
        return
    try:
        fd = locks.open_lock_file(f"{index_path}.lock")
    except OSError:  # no such folder yet (numba makes it when saving), read-only: run unlocked
        yield
        return
    try:
        with locks.held(fd, exclusive=exclusive):
            yield
    finally:
        os.close(fd)


def _locked(method: Callable[..., Any], *, exclusive: bool) -> Callable[..., Any]:
    def call(self: Any, *args: Any) -> Any:
        index_path = getattr(self, "_index_path", None)  # numba's own name for it, since 0.2x
        if index_path is None:
            return method(self, *args)
        with index_lock(index_path, exclusive=exclusive):
            return method(self, *args)

    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _index_or_empty(method: Callable[..., Any]) -> Callable[..., Any]:
    """numba's index reader, with a damaged index read as an empty one. numba writes the index
    without fsync: a power cut (or a full disk, a bad block) can leave it empty or cut short, and
    numba unpickles it unguarded, so every later process compiling the kernel stopped, for ever:
    on an empty index pickle's EOFError, which click turns into "aborted" (exit 130, as if
    Ctrl-C), else an UnpicklingError traceback. Empty, the kernel is compiled and the index
    written again, whole."""
    def call(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except OSError:
            raise  # numba's own handling (absent: empty; unreadable: its error)
        except Exception:
            return {}

    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _data_or_missing(method: Callable[..., Any]) -> Callable[..., Any]:
    """numba's data-file reader, with a damaged file raised as the OSError numba's ``load``
    takes for a missing one (compile again), not an unpickling error (see :func:`_index_or_empty`)."""
    def call(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except OSError:
            raise
        except Exception as exc:
            raise OSError(errno.EIO, f"damaged kernel cache file ({type(exc).__name__})") from None

    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _saved_or_noted(method: Callable[..., Any]) -> Callable[..., Any]:
    """numba's cache-file ``save``, with a write that fails (a full disk, a quota, a cache folder
    another user owns) told once per process in a note: the kernel is compiled and runs, it is
    just not kept. numba raised it out of the compilation, so the command failed ('a write
    failed: no space left on device', exit 2) for want of a cache. One note a process, for all
    caches (:func:`~gmse_cli.messages.cache_note`)."""
    def call(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except OSError as exc:
            from gmse_cli.messages import cache_note

            folder = os.path.dirname(getattr(self, "_index_path", "") or "") or "numba's cache"
            cache_note(f"cannot keep compiled kernels in '{folder}': {(exc.strerror or str(exc)).lower()}; "
                       "they are compiled again on each run until then")
            return None

    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


_process_folder: str | None = None


def _process_cache_folder() -> str:
    """A folder of this process's own for numba's cache, made on first use, removed at exit."""
    global _process_folder
    if _process_folder is None:
        _process_folder = tempfile.mkdtemp(prefix="uscl-numba-")
        atexit.register(shutil.rmtree, _process_folder, ignore_errors=True)
    return _process_folder


def _add_process_locator() -> None:
    """Give numba a last cache locator: the process's own folder, where no other is writable."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    user_wide = getattr(caching, "UserWideCacheLocator", None) or getattr(caching, "_UserWideCacheLocator", None)
    classes = getattr(impl, "_locator_classes", None)
    if user_wide is None or not isinstance(classes, list) or any(getattr(c, "_uscl", False) for c in classes):
        return  # another numba layout, or added already

    class ProcessCacheLocator(user_wide):  # type: ignore[misc, valid-type]
        """numba's user-wide locator, in :func:`_process_cache_folder` instead of ~/.cache/numba."""

        _uscl = True

        def __init__(self, py_func: Any, py_file: str) -> None:
            super().__init__(py_func, py_file)
            self._uscl_path = os.path.join(_process_cache_folder(), self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self) -> str:
            return self._uscl_path

    classes.append(ProcessCacheLocator)


def _install() -> None:
    _add_process_locator()
    cache_file = getattr(caching, "IndexDataCacheFile", None)
    if cache_file is None or getattr(cache_file, "_uscl_locked", False):
        return  # another numba layout (nothing to wrap), or wrapped already
    cache_file.save = _saved_or_noted(_locked(cache_file.save, exclusive=True))
    cache_file.load = _locked(cache_file.load, exclusive=False)
    if hasattr(cache_file, "_load_index") and hasattr(cache_file, "_load_data"):
        cache_file._load_index = _index_or_empty(cache_file._load_index)
        cache_file._load_data = _data_or_missing(cache_file._load_data)
    cache_file._uscl_locked = True


_install()


def variant(*values: int | bool) -> Callable[[Any], Any]:
    """Name a kernel a factory makes after the values it closes over (``k_groups`` for grid 2,
    no search, fused: ``k_groups_2_0_1``); apply it under ``numba.njit``.

    numba names a compiled function by its qualified name and a counter of the process that
    compiles it, and links a cached kernel's callees by those names. Two processes that each
    compiled one grid's variant first cached two different functions under one symbol, and a
    process loading both from the cache ran the first one's code for the second: wrong numbers,
    with no error (tests/test_kernel_variants.py). A name per variant keeps their symbols (and
    their cache index files) apart."""
    suffix = "_".join(str(int(v)) for v in values)

    def rename(fn: Any) -> Any:
        fn.__name__ = f"{fn.__name__}_{suffix}"
        fn.__qualname__ = f"{fn.__qualname__}_{suffix}"
        return fn

    return rename
