"""What every runs-file reader shares: reading the file, numbers and format specs from its
records, each failure one :class:`~gmse_cli.errors.DataError` naming the file and place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gmse_cli.errors import DataError, SpecError
from gmse_cli.inputs import MAX_RUNS_BYTES, is_file, parse_nested, read_text_file, strict_json
from gmse_cli.limits import keep_bounded
from gmse_cli.spec import Format, resolve_format

__all__ = ["read_text", "read_json", "number", "check_spec"]


def read_text(path: Path) -> str:
    """The file's UTF-8 text (a regular file of at most :data:`~gmse_cli.inputs.MAX_RUNS_BYTES`)."""
    return read_text_file(path, what="runs file", error=DataError, limit=MAX_RUNS_BYTES)


def read_json(path: Path) -> Any:
    """The file's JSON document (nesting bounded), one :class:`DataError` line if it is not JSON."""
    try:
        return parse_nested(strict_json, read_text(path), where=str(path), error=DataError)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def number(value: Any, key: str, where: str) -> float:
    """``value`` as a float (a bool or None is not a number); ``where`` names the record."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: {key} = {value!r} is not a number")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise DataError(f"{where}: {key} = {str(value)[:20]}... is too large (over 1e308)") from None
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} = {str(value)[:60]!r} is not a number") from None


def check_spec(spec: str, where: str, key: str) -> Format:
    """``spec`` resolved to its format, or a DataError naming the record's field ``key`` at ``where``.

    A name that is no file (a catalog name, a shorthand) is resolved once per process: a million
    runs name a handful of formats, and a catalog name reads its file (1.7 ms a run). A format
    file is read every time, as it may change."""
    fmt = _RESOLVED.get(spec)
    if fmt is not None:
        return fmt
    try:
        fmt = resolve_format(spec)
    except SpecError as exc:
        raise DataError(f"{where}: {key} format '{spec}' does not resolve: {exc}") from None
    if not (spec.endswith(".toml") or is_file(spec)):
        keep_bounded(_RESOLVED, spec, fmt)
    return fmt


_RESOLVED: dict[str, Format] = {}
