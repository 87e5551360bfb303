"""What every runs-file reader shares: reading the file, numbers and format specs from its
records, each failure one :class:`~gmse_cli.errors.DataError` naming the file and place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import resolve_format

__all__ = ["read_text", "number", "check_spec"]


def read_text(path: Path) -> str:
    """The file's UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read runs file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"runs file {path} is not UTF-8 text") from None


def number(value: Any, key: str, where: str) -> float:
    """``value`` as a float (a bool or None is not a number); ``where`` names the record."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: {key} = {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} = {value!r} is not a number") from None


def check_spec(spec: str, where: str, key: str) -> None:
    """Raise unless ``spec`` resolves to a format (the record's field ``key`` at ``where``)."""
    try:
        resolve_format(spec)
    except SpecError as exc:
        raise DataError(f"{where}: {key} format '{spec}' does not resolve: {exc}") from None
