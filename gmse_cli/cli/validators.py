"""Option checks run by the parser: every command's bad values fail before any work starts.

:data:`VALIDATORS` maps a parameter name (or ``command.parameter`` for one command only) to a
check; :func:`attach_validators` adds them as click callbacks to every command of the app, so a
bad value is one clean ``BadParameter`` error naming the option (exit 2), never a traceback.
"""

from __future__ import annotations

import math
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmse_cli.counts import likely_meant, parse_count, parse_per_param
from gmse_cli.inputs import does_not_exist, exists, user_path
from gmse_cli.limits import MAX_BOOTSTRAP, MAX_SEARCH_BITS, MAX_SEED, MAX_THREADS

__all__ = ["VALIDATORS", "attach_validators", "MAX_SEED", "MAX_VOCAB_SIZE", "MIN_VOCAB_SIZE",
           "MAX_HADAMARD_BLOCK", "MAX_BOOTSTRAP"]

try:  # typer >= 0.20 parses with its own vendored copy of click: raise its BadParameter
    from typer._click.exceptions import BadParameter
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import BadParameter

# One table, keyed by a command parameter's name, of checks run by the parser itself (click
# callbacks attached by :func:`attach_validators` when the application is built): a bad value
# is one line naming the option, before any file is read or any allocation made.

MAX_VOCAB_SIZE = 1 << 20
"""The largest BPE vocabulary ``uscl tokenizer train`` builds (1,048,576 tokens)."""
MIN_VOCAB_SIZE = 258
"""256 byte tokens, <|endoftext|> and at least one merge."""
MAX_HADAMARD_BLOCK = 1 << 20
"""The largest Hadamard block (a row length's limit)."""


def _fail(message: str) -> None:
    raise BadParameter(message)


def _integer(low: int, high: int | None = None) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < low or (high is not None and value > high):
            _fail(f"{value} is outside {low}..{high}" if high is not None else f"{value} must be at least {low}")
    return check


def _real(low: float, high: float | None = None, *, low_open: bool = True, high_open: bool = False) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            _fail(f"{value} is not a finite number in {lo}{low:g}, {high:g}{hi}" if high is not None
                  else f"{value} is not a finite number {'>' if low_open else '>='} {low:g}")
    return check


def _row_length(value: Any) -> None:
    from gmse_cli.spec.vocab import MAX_ROW_LENGTH

    _integer(1, MAX_ROW_LENGTH)(value)


def _family(value: Any) -> None:
    from gmse_cli.spec import Family

    names = [f.value for f in Family]
    if value.strip().lower() not in names:
        from gmse_cli.errors import closest

        _fail(f"'{value}' is not a family; one of {', '.join(names)}{closest(value, names)}")


def _nonempty(value: Any) -> None:
    if not str(value).strip():
        _fail("an empty string names no format")


def _count_text(value: Any) -> None:
    # '200M', '1.5B', '100x': the command parses the rest; here what overflows, or counts less
    # than one parameter or token (a ratio '100x' need only be finite).
    text = str(value)
    if (ratio := parse_per_param(text)) is not None:
        if not math.isfinite(ratio):
            _fail(f"'{value}' is not a finite ratio")
    # (zero and negative counts, and text that is no count: the command's own message)
    elif (count := parse_count(text)) is not None and (not math.isfinite(count) or 0 < count < 1):
        # '--params 0.5' is a 0.5B model far more likely than half a parameter (counts.likely_meant)
        meant = likely_meant(text)
        slip = f"; for {meant[0][:-1]} {meant[1]} write {meant[0]}" if meant else ""
        _fail(f"'{value}' is not a finite count of at least 1{slip}")


def _fix(value: Any) -> None:
    name, sep, number = str(value).partition("=")
    try:
        parsed = float(number) if sep and name.strip() else None
    except ValueError:
        parsed = None
    if parsed is None:
        _fail(f"'{value}' is not NAME=VALUE (e.g. --fix alpha=0.13)")
    elif not math.isfinite(parsed):
        _fail(f"'{value}': {name.strip()} must be a finite number")
    elif parsed < 0 or (parsed == 0 and name.strip() != "E"):
        _fail(f"'{value}': {name.strip()} must be {'>= 0' if name.strip() == 'E' else 'positive'} (a law's constants are)")


def _existing(what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not exists(value):
            _fail(f"{what} '{value}' {does_not_exist(value)}")
    return check


def _data(value: Any) -> None:
    if str(value).strip().lower() != "c4":
        _existing("data path")(value)
        path = user_path(value)
        if not (path.is_file() or path.is_dir()):  # a FIFO or a device may never end
            _fail(f"data path '{value}' is not a regular file or folder (a pipe or a device)")


def _tokenizer(value: Any) -> None:
    text = str(value).strip()
    if text.lower().startswith("bpe:"):
        try:
            size = int(text[4:])
        except ValueError:
            _fail(f"'{value}': bpe:V needs a whole vocabulary size V (e.g. bpe:8192)")
        _integer(MIN_VOCAB_SIZE, MAX_VOCAB_SIZE)(size)
    elif text.endswith(".json") or text.startswith(("/", ".", "~")) or os.sep * 2 in text:
        _existing("tokenizer file")(value)


def _power_of_two(value: Any) -> None:
    if value < 2 or value & (value - 1) or value > MAX_HADAMARD_BLOCK:
        _fail(f"{value} is not a power of two in 2..{MAX_HADAMARD_BLOCK}")


_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def _device(value: Any) -> None:
    if not _DEVICE.match(str(value).strip().lower()):
        _fail(f"'{value}' is not a device (auto, cpu, cuda, cuda:N, mps)")


# ASCII digits only: str.isdigit() also takes '²' or '①', which int() refuses (a traceback).
_SHARD = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


def parse_shard(value: Any) -> tuple[int, int] | None:
    """(K, N) of ``--shard K/N``, 1-based as the README writes it (1/2 and 2/2); None unless
    1 <= K <= N."""
    match = _SHARD.fullmatch(str(value))
    if match and 1 <= int(match[1]) <= int(match[2]):
        return int(match[1]), int(match[2])
    return None


def _shard(value: Any) -> None:
    if parse_shard(value) is None:
        _fail(f"'{value}' is not K/N with 1 <= K <= N (e.g. 1/2)")


VALIDATORS: dict[str, Callable[[Any], None]] = {
    "seed": _integer(0, MAX_SEED),
    "row_length": _row_length,
    "level": _real(0, 1, high_open=True),
    "tokens_per_param": _real(0),
    "bits": _real(0, MAX_SEARCH_BITS),
    "huber_delta": _real(0),
    "lr": _real(0),
    "rbbm_p": _real(0, 0.5, high_open=True),
    "val_fraction": _real(0, 0.5, high_open=True),
    "bootstrap": _integer(0, MAX_BOOTSTRAP),
    "exclude_worst": _integer(0),
    "worst": _integer(0),
    "rows_per_layer": _integer(2),
    "max_steps": _integer(1),
    "batch_size": _integer(1),
    "micro_batch_size": _integer(1),
    "context": _integer(1),
    "eval_tokens": _integer(1),
    "eval_every": _integer(0),
    "checkpoint_every": _integer(0),
    "threads": _integer(1, MAX_THREADS),
    "nproc_per_node": _integer(1),
    "vocab_size": _integer(MIN_VOCAB_SIZE, MAX_VOCAB_SIZE),
    "family": _family,  # (formats and rank: one check, one wording)
    "vs": _nonempty,
    "act": _nonempty,
    "acts": _nonempty,
    "weights": _nonempty,
    "params": _count_text,
    "tokens": _count_text,
    "fix": _fix,
    "data": _data,
    "mse.data": lambda _: None,  # needs torch first: `uscl mse --activations` checks it after the backend
    "tokenizer": _tokenizer,
    "text": _existing("text path"),
    "shard": _shard,
    "device": _device,
    "hadamard_block": _power_of_two,
}
"""Checks by parameter name, or ``command.parameter`` for one command only; each raises
BadParameter (the option is named by click)."""


def _callback(check: Callable[[Any], None], previous: Any) -> Any:
    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if previous is not None:
            value = previous(ctx, param, value)
        if value is None or ctx.resilient_parsing:
            return value
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is not None:
                check(item)
        return value

    return callback


def _takes_path(param: Any) -> bool:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return annotation is Path or Path in typing.get_args(annotation)


def _refuse_text(param: Any, why: Callable[[str], str | None]) -> None:
    """Each text ``param`` is given, checked by ``why`` before conversion: the message it returns
    refuses that value as given (the parser's own message named none)."""
    process = param.process_value

    def process_value(ctx: Any, value: Any) -> Any:
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, str) and (message := why(item)):
                import typer

                raise typer.BadParameter(message, ctx=ctx, param=param)
        return process(ctx, value)

    param.process_value = process_value


def _empty_path(text: str) -> str | None:
    """An empty path ('' from an unset shell variable) reads as '.', the current folder: a
    checkpoint or models folder would silently land there."""
    return None if text.strip() else "it is empty: name a file or folder"


# A whole number as an option writes it: optional sign and ASCII digits. Python's int() also
# reads '1_000' and non-ASCII digits ('\u0661\u0662'), which --params and --tokens refuse; every
# integer option refuses them too, so one spelling means the same everywhere.
_WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*")


def is_whole_number_text(text: str) -> bool:
    """Whether ``text`` spells a whole number as uscl's options take one (no '_', ASCII digits)."""
    return _WHOLE_NUMBER.fullmatch(text) is not None


def _takes(param: Any, kind: type, click_type: str) -> bool:
    """Whether ``param`` takes a ``kind`` (int or float), or an optional one."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:  # older typer: click's own INT or FLOAT type
        return any(c.__name__ == click_type for c in type(getattr(param, "type", None)).__mro__)
    return annotation is kind or (kind in typing.get_args(annotation)
                                  and set(typing.get_args(annotation)) <= {kind, type(None)})


def _takes_integer(param: Any) -> bool:
    return _takes(param, int, "IntParamType")


def _loose_integer(text: str) -> str | None:
    """Anything but a whole number for an integer option ('1_000', non-ASCII digits, '1e6', 'abc')."""
    return None if is_whole_number_text(text) else f"{text!r} is not a whole number (ASCII digits, no '_': e.g. 4096)"


def _takes_float(param: Any) -> bool:
    return _takes(param, float, "FloatParamType")


def _unreadable_float(text: str) -> str | None:
    """Anything a real-valued option cannot read ('4,25', 'abc', ''), and what Python's float
    reads but no one means: '3_0' (30: `search --bits 3_0` searched at 30 bits) and other
    scripts' digits ('٤', which then failed in pydantic with a message naming no value)."""
    try:
        float(text)
    except ValueError:
        return f"{text!r} is not a number (a decimal point, no comma: e.g. 4.25)"
    if not text.isascii() or "_" in text:
        return f"{text!r} is not a number (ASCII digits and a decimal point, no '_': e.g. 4.25)"
    return None


def attach_validators(command: Any) -> Any:
    """``command`` (a click command or group, as Typer builds it) with :data:`VALIDATORS`
    attached to every parameter of a listed name, in every subcommand, every path
    parameter refusing an empty value, every integer parameter refusing '1_000' and every
    real-valued one refusing what it cannot read ('4,25'), naming the value."""
    for param in getattr(command, "params", ()):
        if _takes_integer(param) and not getattr(param, "_uscl_whole", False):
            _refuse_text(param, _loose_integer)
            param._uscl_whole = True
        if _takes_float(param) and not getattr(param, "_uscl_real", False):
            _refuse_text(param, _unreadable_float)
            param._uscl_real = True
        if _takes_path(param) and not getattr(param, "_uscl_nonempty", False):
            _refuse_text(param, _empty_path)
            param._uscl_nonempty = True
        check = VALIDATORS.get(f"{getattr(command, 'name', '')}.{param.name}") or VALIDATORS.get(param.name or "")
        if check is not None and not getattr(param, "_uscl_validated", False):
            param.callback = _callback(check, param.callback)
            param._uscl_validated = True
    for sub in getattr(command, "commands", {}).values():
        attach_validators(sub)
    return command
