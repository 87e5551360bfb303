"""SIGTERM that unwinds the main thread before the process dies of it.

SIGTERM's default action ends the process at once: a temporary file is left behind, a child
process (torchrun and its workers) runs on unattended. While :func:`sigterm_unwinds` is active
it raises instead, so ``except``/``finally`` blocks run, and then re-delivers the signal with
its default action, so the process still dies of SIGTERM as a supervisor expects.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["sigterm_unwinds"]


class _Terminated(BaseException):
    """SIGTERM arrived while :func:`sigterm_unwinds` was active (raised to unwind, then re-delivered)."""


@contextmanager
def sigterm_unwinds(on_signal: Callable[[], None] | None = None,
                    before_dying: Callable[[], None] | None = None) -> Iterator[None]:
    """While the body runs, SIGTERM calls ``on_signal`` (in the handler: it must not block) and
    unwinds the body; then ``before_dying`` runs, with further SIGTERMs ignored, and the process
    dies of SIGTERM as it would have. Only where SIGTERM still has its default action, and only
    on the main thread, where Python runs signal handlers; a program with its own handler keeps
    it. Nested, the outermost one re-delivers (an inner one sees a handler already set)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        if on_signal is not None:
            on_signal()
        raise _Terminated

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except _Terminated:
        if before_dying is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM meanwhile: no matter
            before_dying()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # die of SIGTERM, as without this guard
        raise  # not reached: the default action ends the process
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
