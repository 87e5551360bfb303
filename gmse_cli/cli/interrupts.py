"""Ctrl-C on the command line: one "aborted" line and exit code 130, never a traceback, and
never an interrupt swallowed.

Typer turns a KeyboardInterrupt into a silent exit 130; numba nests one in a SystemError; Python
drops one raised in a weakref callback or a ``__del__``. :func:`keep_interrupts` and
:func:`interrupts_not_swallowed` carry each to :func:`~gmse_cli.cli.main`, which says so with
:func:`say_aborted`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import click
import typer

from gmse_cli.cli import console

__all__ = ["Interrupted", "keep_interrupts", "ABORTS", "ABORT_CODE", "say_aborted", "interrupts_not_swallowed"]


class Interrupted(Exception):
    """Ctrl-C inside a command, carried past Typer (which turns a KeyboardInterrupt into a
    silent exit 130) to :func:`~gmse_cli.cli.main`, which says so."""


def keep_interrupts(command: click.Command) -> click.Command:
    invoke = getattr(command, "invoke", None)
    if invoke is None:  # not a click command (a test's stand-in): nothing to wrap
        return command

    def invoke_keeping_interrupts(ctx):
        try:
            return invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted(*exc.args) from exc
        except SystemError as exc:  # Ctrl-C inside numba: "... returned a result with an exception set", nested
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, KeyboardInterrupt):
                cause = cause.__cause__
            if cause is None:
                raise
            raise Interrupted(*cause.args) from exc

    command.invoke = invoke_keeping_interrupts  # type: ignore[method-assign]
    return command


ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt, Interrupted)
ABORT_CODE = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def say_aborted(where: str = "") -> None:
    """Print the one line of a Ctrl-C'd command. A second Ctrl-C (people press it twice) during
    the print is ignored: landing in it (a lazy import of rich) it printed a traceback instead."""
    with _sigint_ignored():
        console.err_console.print(f"aborted: {where}" if where else "aborted", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT is ignored while the body runs (on the main thread, where handlers can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupts_not_swallowed(previous):  # type: ignore[no-untyped-def]
    """An unraisable-exception hook that lets no Ctrl-C be swallowed. Python cannot raise an
    exception out of a weakref callback, a ``__del__`` or a ctypes callback (numba's type cache
    and llvmlite's object cache run them while kernels compile): a KeyboardInterrupt landing
    there printed "Exception ignored ... KeyboardInterrupt" and its traceback, and the command
    ran on to the end. The hook says nothing and has the interrupt delivered again 10 ms later
    from another thread (delivered at once, Python raises it inside this hook, where it is lost
    too), at the main thread's next ordinary line, where it stops the command ("aborted", exit
    130). A handler set to ignore SIGINT by then (the 'aborted' line) still ignores it."""
    import _thread

    def redeliver() -> None:
        timer = threading.Timer(0.01, _thread.interrupt_main)
        timer.daemon = True  # never holds the exit
        timer.start()

    def hook(unraisable) -> None:  # type: ignore[no-untyped-def]
        try:
            if isinstance(unraisable.exc_value, KeyboardInterrupt):
                redeliver()
                return
        except KeyboardInterrupt:  # a further Ctrl-C raised inside this hook
            redeliver()
            return
        previous(unraisable)

    return hook
