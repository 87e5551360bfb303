"""The one error hierarchy of uscl.

Every *expected* failure (bad user input, a missing optional backend, a fit that cannot run)
raises a subclass of :class:`UsclError`. The CLI maps these, in one place, to a single line on
stderr and exit code 2; anything else is a bug and exits 1 with a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "UsclError",
    "SpecError",
    "LawError",
    "FitError",
    "DataError",
    "CacheError",
    "BackendMissing",
    "TrainError",
    "one_line",
    "visible",
    "is_control",
    "described",
    "list_of",
    "more_likewise",
    "bad_value",
    "closest",
    "nearest_name",
    "one_of",
]


def described(value: object) -> str:
    """``value`` as an error names an argument of the wrong kind: its type and the start of its text."""
    return f"{type(value).__name__} {str(value)[:60]!r}"


def list_of(items: object, kind: type, error: type[Exception], takes: str) -> list:
    """``items`` as a list of ``kind``, or ``error`` saying what the caller ``takes`` and naming
    ``items`` (one item alone, text, no iterable) or the first of them that is not a ``kind``."""
    from collections.abc import Iterable

    if isinstance(items, kind | str | bytes) or not isinstance(items, Iterable):
        raise error(f"{takes}, not {described(items)}")
    items = list(items)
    for item in items:
        if not isinstance(item, kind):
            raise error(f"{takes}; got {described(item)} among them")
    return items


def nearest_name(typed: object, choices: Sequence[str]) -> str | None:
    """The choice a ``typed`` name that is none of ``choices`` most likely meant, or None where
    none is close: the one choice it starts ('quant' -> 'quantization'), else the nearest by
    :func:`difflib.get_close_matches`, either compared in lower case."""
    import difflib

    text = str(typed).strip().lower()
    lowered = {c.lower(): c for c in choices}
    started = [c for low, c in lowered.items() if text and low.startswith(text)]
    found = started if len(started) == 1 else [lowered[c] for c in difflib.get_close_matches(text, list(lowered), n=1)]
    return found[0] if found else None


def closest(typed: object, choices: Sequence[str]) -> str:
    """'; did you mean 'rho'?' for a ``typed`` name that is none of ``choices`` (:func:`nearest_name`),
    or '' where none is close."""
    found = nearest_name(typed, choices)
    return f"; did you mean '{found}'?" if found else ""


def one_of(value: str, choices: Sequence[str], option: str, error: type[Exception]) -> str:
    """``value`` of ``option`` as the one of ``choices`` (lower-case names) it names in any case
    (names uscl defines are read in any case, README), or ``error``: one line listing them, with
    the nearest (``--model 'unifed' is not one of ...; did you mean 'unified'?``)."""
    if (name := value.strip().lower()) in choices:
        return name
    raise error(f"{option} '{value}' is not one of {', '.join(choices)}{closest(value, choices)}")


def more_likewise(rest: int, noun: str = "") -> str:
    """How an error that names the first offender counts the ``rest``: ' (2 more layers
    likewise)', '' when there are none."""
    if rest <= 0:
        return ""
    return f" ({rest} more {noun}{'s' if noun and rest > 1 else ''}{' ' if noun else ''}likewise)"


def one_line(message: object) -> str:
    """``message`` with its whitespace runs (newlines included) as single spaces, and every
    other control character as an escape (:func:`visible`)."""
    return visible(" ".join(str(message).split()))


def visible(text: object) -> str:
    """``text`` with each control character but newline and tab written as its escape (``\\x1b``).

    A name read from a file reaches the terminal in tables, notes and errors; an escape
    character in it could recolour the screen, move the cursor or clear it, and a carriage
    return could overwrite what the line said.
    """
    text = str(text)
    if text.isprintable():  # the usual case, at C speed
        return text
    return "".join(
        c if c in "\n\t" or not is_control(c) else ascii(c)[1:-1] for c in text
    )


def is_control(char: str) -> bool:
    """Whether ``char`` is a C0 or C1 control character or DEL (Unicode category Cc)."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


class UsclError(Exception):
    """Base class: the message is shown to the user as one line."""

    parameter: str | None = None
    """The parameter whose value is refused (:func:`bad_value`), else None."""
    value_rule: str = ""
    """The refused value and the rule it breaks, without the parameter's name."""


def bad_value(error: type[UsclError], parameter: str, value: object, rule: str) -> UsclError:
    """``error`` refusing ``value`` of a library function's ``parameter``: its message names the
    parameter as a caller writes it (``rel_err=0 must be a positive number``); the command line
    names its option instead where the command has that parameter (``--rel-err 0 must be ...``)."""
    exc = error(f"{parameter}={value!r} {rule}")
    exc.parameter, exc.value_rule = parameter, f"{value!r} {rule}"
    return exc


class SpecError(UsclError, ValueError):
    """A format, scheme or sweep spec is malformed or names something unknown."""


class LawError(UsclError, ValueError):
    """A law file is malformed, or a law does not cover what it is asked about."""


class FitError(UsclError):
    """A fit cannot run on the given runs, or failed to converge."""


class DataError(UsclError):
    """An input file (runs, checkpoint, corpus) is missing, unreadable or malformed."""


class CacheError(DataError, OSError):
    """The cache folder cannot be made. An OSError too: a cache that only saves time (GMSEs,
    remembered constants) is skipped as before; one that is needed (tokens) is one error line."""


class BackendMissing(UsclError, ImportError):
    """An optional dependency (torch, transformers, ...) is needed but not installed."""


class TrainError(UsclError):
    """A training configuration cannot run (unknown preset, budget too small, ...)."""
