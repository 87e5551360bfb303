"""numba's thread pool, started so that its OpenMP workers sleep between kernels.

numba's ``omp`` threading layer runs on libgomp, whose idle workers spin-wait for the next
parallel region unless ``OMP_WAIT_POLICY=PASSIVE``. uscl launches many short kernels with
numpy work in between; on a small or shared machine the spinning workers take the cores that
work needs (measured on 2 busy cores: 20 ms instead of 10 ms per compress call, and a GMSE
estimate 4-8x slower). libgomp reads its environment once, when it is loaded, which is when
numba starts its pool. So :func:`start_numba_threads` sets the variable for that moment only
and restores the environment at once: uscl never changes ``os.environ`` for the rest of the
process, and a policy the user set is kept. If the pool (or libgomp) was already started by
someone else, nothing changes.

numba's ``workqueue`` layer (its fallback where neither libgomp nor TBB loads, or chosen with
``NUMBA_THREADING_LAYER``) is not thread-safe: two threads of a program launching parallel
kernels at once made it abort the process. :func:`parallel_launches` serializes uscl's kernel
launches under that layer only; ``omp`` and ``tbb`` take concurrent launches.

GNU OpenMP (numba's ``omp`` layer on Linux) is not fork-safe: a process forked after its parent
ran a parallel kernel (``multiprocessing``'s default 'fork' on Linux) was killed by numba with
SIGTERM at its first kernel, and a ``multiprocessing.Pool`` waited for its lost task forever.
:func:`parallel_launches` refuses there with a :class:`~gmse_cli.errors.UsclError` that says to
use 'spawn' or 'forkserver'.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, nullcontext

from gmse_cli.errors import SpecError, UsclError
from gmse_cli.limits import MAX_THREADS

__all__ = ["start_numba_threads", "check_thread_setting", "parallel_launches"]

_lock = threading.Lock()
_started = False
_launch_lock = threading.RLock()  # re-entrant: a codebook trained inside a compress call
_serial: bool | None = None  # whether the pool's layer needs launches one at a time
_launcher: int | None = None  # the process that launched kernels, if under GNU OpenMP


def check_thread_setting() -> None:
    """Refuse a ``NUMBA_NUM_THREADS`` numba cannot start a pool with, before numba reads it, and
    an ``OMP_NUM_THREADS`` that GNU OpenMP refuses.

    numba reads its variable once, when it is imported: 0 was a ValueError traceback at the
    first parallel kernel, text ('x', '') a warning carrying numba's own traceback, and 99999 a
    segmentation fault while the pool started. A value is whole, 1 to :data:`MAX_THREADS` (the
    limit of ``train --threads``), ASCII digits with an optional '+' and surrounding blanks.

    libgomp (numba's ``omp`` layer, torch) reads ``OMP_NUM_THREADS`` when it loads, prints its
    own "Invalid value" line for what it cannot read, and goes on without it: a setting the
    user made is then lost under a line uscl did not write. What libgomp reads is kept as it
    is: positive whole numbers, comma-separated for nested levels ('4,2'), each with optional
    blanks and '+'; numba sizes its own pool from ``NUMBA_NUM_THREADS`` either way."""
    raw = os.environ.get("NUMBA_NUM_THREADS")
    if raw is not None:
        digits = raw.strip().removeprefix("+")
        if not (digits.isascii() and digits.isdigit() and 1 <= int(digits) <= MAX_THREADS):
            raise SpecError(f"environment variable NUMBA_NUM_THREADS={raw!r} must be a whole number of threads "
                            f"from 1 to {MAX_THREADS} (or unset)")
    raw = os.environ.get("OMP_NUM_THREADS")
    if raw is not None and not all(_omp_count(part) for part in raw.split(",")):
        raise SpecError(f"environment variable OMP_NUM_THREADS={raw!r} must be a whole number of threads of "
                        "at least 1, or a comma-separated list of them for nested levels (or unset)")


def _omp_count(text: str) -> bool:
    # one entry as libgomp's strtoul reads it: blanks, an optional '+', digits, blanks; 1 to LONG_MAX
    digits = text.strip(" \t\n\r\f\v").removeprefix("+")
    return digits.isascii() and digits.isdigit() and 1 <= int(digits) < 1 << 63


def start_numba_threads() -> None:
    """Start numba's thread pool once per process, with passive OpenMP waits unless the user
    chose a policy. Cheap after the first call; call it before uscl's first parallel kernel."""
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        import numba

        if "OMP_WAIT_POLICY" in os.environ:
            numba.get_num_threads()  # the user's policy stands
        else:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            try:
                numba.get_num_threads()  # starts the pool: libgomp reads its environment now
            finally:
                del os.environ["OMP_WAIT_POLICY"]
        _started = True


def parallel_launches() -> AbstractContextManager[object]:
    """Hold while launching numba parallel kernels (starts the pool): a lock under the
    workqueue layer, which aborts the process on concurrent launches; nothing under the
    thread-safe ``omp`` and ``tbb`` layers."""
    global _serial, _launcher
    start_numba_threads()
    if _serial is None:
        import numba

        try:
            layer = numba.threading_layer()
        except ValueError:  # no pool started (numba changed how): be safe
            return _launch_lock
        _serial = layer not in ("omp", "tbb")
        if layer == "omp":
            from numba.np.ufunc import omppool

            if getattr(omppool, "openmp_vendor", "GNU") == "GNU":
                _launcher = os.getpid()
    if _launcher is not None and _launcher != os.getpid():
        raise UsclError("uscl's numba kernels cannot run in a process forked after its parent ran them: GNU "
                        "OpenMP is not fork-safe (numba would kill this process); start worker processes "
                        "with multiprocessing's 'spawn' or 'forkserver' method")
    return _launch_lock if _serial else nullcontext()
