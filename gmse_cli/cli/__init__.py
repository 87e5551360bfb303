"""The `uscl` command line: a thin shell over the library.

Each command lives in its own module with a ``register(app)`` function; this module builds the
one Typer application, and :func:`main` is the single exit path: expected errors
(:class:`~gmse_cli.errors.UsclError`) become one line on stderr and exit code 2, a reader that
closes the output early (``uscl rank | head -1``) a silent exit 141, anything else is a bug and
keeps its traceback (exit 1).
"""

from __future__ import annotations

import errno
import functools
import signal
import sys

import click
import typer

try:  # typer >= 0.20 raises parsing errors from its own vendored copy of click
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer raises click's own exceptions
    _TyperClickException = click.exceptions.ClickException

from gmse_cli.cli import console
from gmse_cli.cli.interrupts import (
    ABORT_CODE,
    ABORTS,
    Interrupted,
    interrupts_not_swallowed,
    keep_interrupts,
    say_aborted,
)
from gmse_cli.cli.validators import attach_validators
from gmse_cli.errors import UsclError, one_line
from gmse_cli.progress import enable_notices
from gmse_cli.threads import check_thread_setting

__all__ = ["COMMANDS", "COMMAND_MODULES", "build_app", "main", "run"]

COMMANDS: dict[str, tuple[str, str]] = {
    "gmse": ("gmse", "GMSE of each format: point estimate, 95% interval, effective bits."),
    "rank": ("rank", "Rank formats by capacity, effective parameters, predicted loss and the memory to match bf16."),
    "predict": ("rank", "The law's prediction for one format: each stage's GMSE and capacity, and the loss terms."),
    "fit": ("fit", "Fit a scaling law to training runs: constants with intervals, capacities, held-out error, drift."),
    "train": ("train", "Pretrain Llama models over compressed weights/activations and record the final losses."),
    "mse": ("mse", "Real-weight (or activation) MSE of formats on a model, against GMSE and the law's capacity."),
    "search": ("search", "Search the format space for the highest capacity at or below a bits/param budget."),
    "formats": ("formats", "List the shipped formats, or show, export or import one as TOML."),
    "tokenizer": ("train", "Tokenizers for offline training."),
}
"""Each top-level command: the module (``gmse_cli.cli.<module>``) whose ``register`` adds it, and
its line in ``uscl --help``. A command line that names one command imports and builds only that
module's commands (35 ms less than all seven); ``uscl --help``, a line naming no command and a
mistyped name list the commands from here without building any (the seven modules' parameters
cost 70 ms to build), ``uscl --version`` lists none."""

COMMAND_MODULES = {name: module for name, (module, _) in COMMANDS.items()}

try:
    from typer._click.exceptions import NoArgsIsHelpError as _TyperNoArgs
except ImportError:  # pragma: no cover
    _TyperNoArgs = getattr(click.exceptions, "NoArgsIsHelpError", ())
_NO_ARGS = tuple(e for e in (_TyperNoArgs, getattr(click.exceptions, "NoArgsIsHelpError", None)) if isinstance(e, type))
_USAGE_ERRORS = (click.exceptions.ClickException, _TyperClickException)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""What a write on a full disk, past a quota or past a file size limit (RLIMIT_FSIZE) fails with."""


def _wrap_callbacks(command: click.Command) -> click.Command:
    """``command`` with each command's work (its callback) wrapped: first
    :func:`~gmse_cli.threads.check_thread_setting` (before anything imports numba, which reads
    the setting once; after the line is parsed, so ``--help`` and ``--version`` answer whatever
    the environment holds), and a library's refusal of a parameter's value
    (:func:`~gmse_cli.errors.bad_value`) names the command's option for it. A group's own
    callback checks the setting only where it is the command (``uscl formats`` lists the catalog)."""
    from gmse_cli.cli.output import current_context

    subcommands = getattr(command, "commands", None)
    for sub in (subcommands or {}).values():
        _wrap_callbacks(sub)
    callback = getattr(command, "callback", None)
    if callback is None or getattr(callback, "_uscl_wrapped", False):
        return command
    options = {p.name: max(p.opts, key=len) for p in getattr(command, "params", ()) if getattr(p, "opts", None)}

    @functools.wraps(callback)
    def wrapped(*args, **kwargs):
        ctx = current_context() if subcommands else None
        if ctx is None or ctx.invoked_subcommand is None:
            check_thread_setting()
        try:
            return callback(*args, **kwargs)
        except UsclError as exc:
            if exc.parameter in options:
                exc.args = (f"{options[exc.parameter]} {exc.value_rule}",)
            raise

    wrapped._uscl_wrapped = True  # type: ignore[attr-defined]
    command.callback = wrapped
    return command


_PIPE_CODE = 128 + getattr(signal, "SIGPIPE", 13)
"""The exit code of a command whose stdout reader went away (141), as shells report a tool that
SIGPIPE killed; Python ignores SIGPIPE, so the write raises BrokenPipeError instead. Windows has
no SIGPIPE (the name is absent there): the same 141, from its POSIX number 13."""


def _from_closed_pipe(exc: SystemExit) -> bool:
    """Whether ``exc`` is Typer's or rich's exit 1 for a broken pipe (each catches the
    BrokenPipeError, exits 1 and says nothing): the error is then the exit's context."""
    context = exc.__context__
    return exc.code == 1 and isinstance(context, OSError) and context.errno == errno.EPIPE


def _pipe_closed() -> None:
    """Exit 141 without a word: stdout's reader has all it wanted (``| head -1``). Later writes,
    and the flush at exit, go to the null device, so Python prints no "Exception ignored"."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file (a test's capture), or closed
        pass
    sys.exit(_PIPE_CODE)


def _version(value: bool) -> None:
    if value:
        from gmse_cli import __version__

        sys.stdout.write(f"uscl {__version__}\n")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", help="print the version and exit", callback=_version,
                                 is_eager=True),
) -> None:
    """Unified scaling laws for compressed representations: Gaussian MSE, capacity, effective
    parameters and predicted loss of any numeric format.

    Formats are positional wherever formats are what a command is about (gmse, rank, predict,
    formats show); where the subject is something else (a checkpoint for mse, a sweep for
    train), formats are given with --format / -f. Every command that prints a table also
    takes --json and --csv; progress goes to stderr.
    """


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The Typer application, with only the module of the command ``argv`` names (all if none)."""
    import importlib

    from gmse_cli.cli.options import paragraphs

    args = sys.argv[1:] if argv is None else argv
    named = next((a for a in args if not a.startswith("-")), None)
    app = typer.Typer(name="uscl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode="rich")
    app.callback(help=paragraphs(_root.__doc__ or ""))(_root)
    if named in COMMANDS:
        importlib.import_module(f"gmse_cli.cli.{COMMANDS[named][0]}").register(app)
    elif named is not None or "--version" not in args:
        # The listing (`uscl --help`, `uscl`, a mistyped name and its "did you mean"): every
        # command by name and summary; none of them can run from here.
        for name, (_, summary) in COMMANDS.items():
            app.command(name, help=summary, short_help=summary, add_help_option=False)(_listed_only)
    return app


def _listed_only() -> None:  # pragma: no cover - only a line that names no command lists these
    raise RuntimeError("a command listed in `uscl --help` was run without being built")


def _tidy(command: click.Command) -> click.Command:
    """Flags show no value placeholder in --help (typer shows '<bool>' as if they took one)."""
    helper = None
    if hasattr(command, "get_help_option"):
        try:  # typer >= 0.20 builds commands on its own vendored copy of click
            from typer._click import Context
        except ImportError:  # pragma: no cover
            from click import Context
        helper = command.get_help_option(Context(command))
    for param in [*getattr(command, "params", []), *([helper] if helper is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        if sub.short_help is None and sub.help:
            # a group's command list shows the docstring's first paragraph, and rich markup
            # keeps its source line breaks there: one line, for the panel to wrap
            from gmse_cli.cli.options import paragraphs

            sub.short_help = paragraphs(sub.help).split("\n\n")[0]
        _tidy(sub)
    return command


def _cli(argv: list[str] | None) -> click.Command:
    return _tidy(typer.main.get_command(build_app(argv)))


_ERROR_HEAD, _ERROR_TAIL = 1500, 500
"""An error line longer than head + tail characters keeps its two ends: a value echoed whole (a
100,000-character format name) would bury the line, and both ends say what was wrong."""


def _error(text: str) -> None:
    """One line on stderr: 'error:' in bold red, then ``text`` as written (never read as markup).
    A stderr whose reader is gone takes nothing, and the caller still exits with its code (2),
    not the 1 of a bug."""
    from rich.text import Text

    line = one_line(text)
    if len(line) > _ERROR_HEAD + _ERROR_TAIL:
        left_out = len(line) - _ERROR_HEAD - _ERROR_TAIL
        line = f"{line[:_ERROR_HEAD]} ... ({left_out:,} characters left out) ... {line[-_ERROR_TAIL:]}"
    # a stderr whose reader is gone goes quiet (messages.stderr_console): the error's own code stands
    console.err_console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)


def _escaped(error: UnicodeError) -> tuple[bytes, int]:
    """Codec error handler for stdout: a file name's bytes that are not UTF-8 (read by Python as
    lone surrogates) written as they were, as Python's C locale writes them; any other character
    the encoding lacks as a \\uXXXX escape, which JSON and TOML strings read back."""
    if not isinstance(error, UnicodeEncodeError):
        raise error

    def written(c: str) -> bytes:
        if 0xDC80 <= ord(c) <= 0xDCFF:
            return bytes([ord(c) - 0xDC00])
        return (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}").encode("ascii")

    return b"".join(written(c) for c in error.object[error.start:error.end]), error.end


def _usable_streams() -> None:
    """Standard streams every environment can print to: a closed stdout or stderr (``>&-``,
    which Python leaves as None) writes to the null device, and stdout never fails on a
    character its encoding lacks (PYTHONIOENCODING=ascii, a Latin-1 locale; a non-UTF-8 file
    name's bytes, which Python reads as lone surrogates)."""
    import codecs
    import os

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process's life
    codecs.register_error("uscl-escaped", _escaped)
    try:
        sys.stdout.reconfigure(errors="uscl-escaped")
    except (AttributeError, OSError, ValueError):  # not a text file (a test's capture), or closed
        pass


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``uscl`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = keep_interrupts(attach_validators(_wrap_callbacks(_cli(args))))
    enable_notices(True)  # a kernel compiled or a codebook trained says so on stderr
    try:
        if args in ([], ["--help"]):  # the listing: drawn without Typer's help module (cli.roothelp)
            from gmse_cli.cli.roothelp import print_group_help

            print_group_help(command, prog="uscl")
            sys.stdout.flush()
            sys.exit(0 if args else 2)
        code = command.main(args=argv, prog_name="uscl", standalone_mode=False)
        sys.stdout.flush()  # what is still buffered: a reader gone by now is a closed pipe too
        if code == ABORT_CODE:  # Ctrl-C while Typer parsed the line: it returns 130 and says nothing
            say_aborted()
    except BrokenPipeError:
        _pipe_closed()
    except SystemExit as exc:
        if _from_closed_pipe(exc):
            _pipe_closed()
        raise
    except UsclError as exc:
        _error(str(exc))
        sys.exit(2)
    except _NO_ARGS as exc:
        # `uscl` (or a group) alone: its help, as click itself would show it, and the usage exit code.
        console.out_console.print(exc.ctx.get_help() if exc.ctx is not None else "see 'uscl --help'", highlight=False, markup=False)
        sys.exit(2)
    except _USAGE_ERRORS as exc:
        # Bad options and arguments: one line too, naming the command's help.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        from gmse_cli.cli.nearmiss import usage_message

        _error(usage_message(exc) + hint)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        # A write uscl does not wrap itself (numba's kernel cache, a library's own file) on a
        # full disk or past a file size limit: one line naming the file, as uscl's own writes give.
        what = f"cannot write {exc.filename}" if exc.filename else "a write failed"
        _error(f"{what}: {(exc.strerror or str(exc)).lower()} (free some space, then rerun)")
        sys.exit(2)
    except ABORTS as exc:
        # A training run stopped by Ctrl-C says where its checkpoint is (resume by rerunning).
        where = str(exc) if isinstance(exc, KeyboardInterrupt | Interrupted) and exc.args else ""
        say_aborted(where)
        sys.exit(ABORT_CODE)
    finally:
        enable_notices(False)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The ``uscl`` console script and ``python -m gmse_cli``: :func:`main`, with a garbage
    collector that runs less often and an exit that skips the interpreter's teardown.

    Tearing down the objects numba and pydantic leave behind took 0.25 s after a Monte Carlo
    command and 0.02-0.05 s after others, more than some commands' own work. By the time
    :func:`main` returns, every file uscl writes has been written atomically and closed, so the
    exit goes on as usual (Python prints what it prints, and runs every exit handler that
    libraries register: temporary folders, logging, llvmlite) until the last handler, this
    one, registered before any other: it flushes the standard streams and ends the process,
    skipping only the freeing of memory the process gives back anyway. Programs and tests that
    call :func:`main` keep Python's ordinary exit."""
    import atexit
    import gc
    import os

    # Importing numba and pydantic builds about a million objects and few cycles: at Python's
    # default threshold (700 allocations) the collector ran 308 times in `uscl gmse --all
    # --recompute` (0.1 s); at 50,000, 4 times (0.035 s). Cycles are still collected.
    gc.set_threshold(50_000, 10, 10)
    _usable_streams()
    sys.unraisablehook = interrupts_not_swallowed(sys.unraisablehook)
    status = 1  # an uncaught exception exits 1, as Python's own exit would

    def end_without_teardown() -> None:  # reads the status run() last set
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`uscl rank | head`): nothing to save
                pass
        os._exit(status)

    atexit.register(end_without_teardown)  # first registered: the last handler to run
    try:
        main()
        status = 0
    except SystemExit as exc:
        code = exc.code
        status = 0 if code is None else code if isinstance(code, int) else 1
        if status == ABORT_CODE:  # a second Ctrl-C in an exit handler (torch's) printed a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise
    except KeyboardInterrupt:  # Ctrl-C while the command's module loaded, before main's handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        status = ABORT_CODE
        say_aborted()
