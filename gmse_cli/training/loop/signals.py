"""Ctrl-C during a run: the first asks it to stop after the current step, a second stops at once."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["graceful_sigint"]


@contextlib.contextmanager
def graceful_sigint() -> Iterator[Callable[[], bool]]:
    """While active, the first SIGINT only sets a flag (checked between steps)."""
    requested = {"stop": False}
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)
