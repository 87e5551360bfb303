"""What a near miss on the command line most likely meant, added to click's one-line refusal.

Click suggests a command only where the case matches (``uscl RANK`` got no hint) and an option
only among the command's own (``uscl gmse --params 7B``, an option of rank and predict, got
none; ``uscl rank --data``, mse's and train's, got "Possible options: --act, --draws"), and the
paper's symbols (``--N``, ``--D``) got nothing: an option whose help opens with the symbol
("N, non-embedding parameters") is named. Every hint here is computed from the built commands
themselves, never from a table.
"""

from __future__ import annotations

import ast
import importlib
import re
from typing import Any

__all__ = ["usage_message"]

_NO_SUCH_COMMAND = re.compile(r"No such command ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\.")


def usage_message(exc: Any) -> str:
    """Click's message for the usage error ``exc``, with the hint a near miss deserves."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    if (match := _NO_SUCH_COMMAND.match(message)) and "Did you mean" not in message:
        return message + _command_hint(ast.literal_eval(match[1]), list(getattr(ctx.command, "commands", {})))
    option = getattr(exc, "option_name", None)
    if isinstance(option, str) and (hint := _symbol_hint(option, ctx.command_path)):
        return f"{exc.message}{hint}"
    if isinstance(option, str) and option.startswith("--") and (hint := _other_commands_hint(option, ctx.command_path)):
        # an option other commands take exactly says more than click's guesses among this one's
        # ('rank --data': mse's and train's, not "Possible options: --act, --draws")
        return f"{exc.message}{hint}"
    return message


def _command_hint(typed: str, names: list[str]) -> str:
    """' Did you mean 'rank'?' for 'RANK' (compared in lower case, where click compares as typed:
    :func:`~gmse_cli.errors.nearest_name`, the hint every other near miss gets)."""
    from gmse_cli.errors import nearest_name

    close = nearest_name(typed, names)
    return f" Did you mean '{close}'?" if close else ""


def _other_commands_hint(option: str, here: str) -> str:
    """' (an option of uscl predict, uscl rank)' for an option the command lacks and others take."""
    takers = sorted(path for path, opts in _every_command_option() if option in opts and path != here)
    return f" ({option} is an option of {', '.join(takers)})" if takers else ""


_SYMBOL_OPTION = re.compile(r"--?([A-Za-z])")
"""A one-letter option, as a reader of the paper types its symbols: ``--N``, ``--n``, ``--D``."""


def _symbol_hint(option: str, here: str) -> str:
    """' (the paper's N is --params)' for '--N' or '--n', where an option's help opens with
    'N, ' (and ', an option of uscl predict, uscl rank' where this command lacks it)."""
    if not (match := _SYMBOL_OPTION.fullmatch(option)):
        return ""
    symbol = match[1].upper()
    takers: dict[str, list[str]] = {}
    for path, params in _every_command_param():
        for param in params:
            help_text = getattr(param, "help", None) or ""
            if help_text.startswith(f"{symbol}, ") and (names := [o for o in param.opts if o.startswith("--")]):
                takers.setdefault(names[0], []).append(path)
    hints = [name if here in paths else f"{name}, an option of {', '.join(sorted(paths))}"
             for name, paths in takers.items()]
    return f" (the paper's {symbol} is {'; '.join(hints)})" if hints else ""


def _every_command_option() -> list[tuple[str, set[str]]]:
    """Each command's path ('uscl formats show') and the option names it takes."""
    found = [(path, {o for p in params for o in getattr(p, "opts", ())}) for path, params in _every_command_param()]
    return [(path, own) for path, own in found if own]


def _every_command_param() -> list[tuple[str, list[Any]]]:
    """Each command's path ('uscl formats show') and its click parameters: every command
    module built, which only a refused option pays for (70 ms)."""
    import typer

    from gmse_cli.cli import COMMANDS

    app = typer.Typer(name="uscl", add_completion=False)
    app.callback()(lambda: None)
    for module in dict.fromkeys(module for module, _ in COMMANDS.values()):
        importlib.import_module(f"gmse_cli.cli.{module}").register(app)
    found: list[tuple[str, list[Any]]] = []

    def walk(command: Any, path: str) -> None:
        found.append((path, list(getattr(command, "params", ()))))  # a group's own too ('uscl formats --family')
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "uscl")
    return found
