"""The `uscl` command line: a thin shell over the library.

Each command lives in its own module with a ``register(app)`` function; this module builds the
one Typer application, and :func:`main` is the single exit path: expected errors
(:class:`~gmse_cli.errors.UsclError`) become one line on stderr and exit code 2, anything else
is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape

try:  # typer >= 0.20 raises parsing errors from its own vendored copy of click
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # pragma: no cover - older typer raises click's own exceptions
    _TyperClickException = click.exceptions.ClickException

from gmse_cli.cli.console import err_console, out_console
from gmse_cli.cli.validators import attach_validators
from gmse_cli.errors import UsclError
from gmse_cli.progress import enable_notices

__all__ = ["COMMAND_MODULES", "build_app", "main"]

COMMAND_MODULES = {
    "formats": "formats", "gmse": "gmse", "rank": "rank", "predict": "rank", "fit": "fit", "train": "train",
    "tokenizer": "train", "mse": "mse", "search": "search",
}
"""Each top-level command and the module (``gmse_cli.cli.<module>``) whose ``register`` adds it.
A command line that names one command imports and builds only that module's commands (35 ms
less than all seven, measured byte-compiled); ``uscl --help`` and a line naming no command build
them all, ``uscl --version`` none."""

try:
    from typer._click.exceptions import NoArgsIsHelpError as _TyperNoArgs
except ImportError:  # pragma: no cover
    _TyperNoArgs = getattr(click.exceptions, "NoArgsIsHelpError", ())
_NO_ARGS = tuple(e for e in (_TyperNoArgs, getattr(click.exceptions, "NoArgsIsHelpError", None)) if isinstance(e, type))
_USAGE_ERRORS = (click.exceptions.ClickException, _TyperClickException)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)


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
    if named in COMMAND_MODULES:
        modules = [COMMAND_MODULES[named]]
    else:  # `uscl --version` needs no command; `uscl --help` and a mistyped name list them all
        modules = [] if named is None and "--version" in args else dict.fromkeys(COMMAND_MODULES.values())
    app = typer.Typer(name="uscl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode="rich")
    app.callback(help=paragraphs(_root.__doc__ or ""))(_root)
    for name in modules:
        importlib.import_module(f"gmse_cli.cli.{name}").register(app)
    return app


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
        _tidy(sub)
    return command


def _cli(argv: list[str] | None) -> click.Command:
    return _tidy(typer.main.get_command(build_app(argv)))


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``uscl`` console script."""
    command = attach_validators(_cli(argv))
    enable_notices(True)  # a kernel compiled or a codebook trained says so on stderr
    try:
        code = command.main(args=argv, prog_name="uscl", standalone_mode=False)
    except UsclError as exc:
        err_console.print(f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _NO_ARGS as exc:
        # `uscl` (or a group) alone: its help, as click itself would show it, and the usage exit code.
        out_console.print(exc.ctx.get_help() if exc.ctx is not None else "see 'uscl --help'", highlight=False, markup=False)
        sys.exit(2)
    except _USAGE_ERRORS as exc:
        # Bad options and arguments: one line too, naming the command's help.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {escape(_one_line(exc.format_message()))}{escape(hint)}",
                          highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except _ABORTS:
        err_console.print("aborted")
        sys.exit(130)
    finally:
        enable_notices(False)
    sys.exit(code if isinstance(code, int) else 0)
