"""TOML files: read one with a one-line error, render data as TOML, write a file atomically.

The one TOML writer of uscl (format files, law files): values, keys and string escapes are
tomli-w's, so whatever it writes :mod:`tomllib` reads back to equal data (a description with a
newline included). Only the top-level arrays of flat tables (a format's ``stages``) are laid out
here, always as ``[[key]]`` blocks: tomli-w inlines the short ones, which would give a file two
layouts depending on line length.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from gmse_cli.errors import UsclError

__all__ = ["read_toml", "dumps_toml", "write_text_atomic"]


def read_toml(
    path: str | Path, *, what: str, error: type[UsclError], read_error: type[UsclError] | None = None
) -> dict[str, Any]:
    """The top-level table of the TOML file ``path``.

    A file that cannot be read raises ``read_error`` (default ``error``), malformed TOML raises
    ``error``; both messages name ``what`` ("format file", "law file") or the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise (read_error or error)(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: malformed TOML: {exc}") from None


def dumps_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML text; a top-level list of flat tables becomes ``[[key]]`` blocks, last."""
    blocks = {key: value for key, value in data.items() if _is_flat_table_array(key, value)}
    rest = {key: value for key, value in data.items() if key not in blocks}
    parts = [tomli_w.dumps(rest)] if rest else []
    # The blocks come last: every key after a [[key]] header would belong to that table.
    parts += [f"[[{key}]]\n" + tomli_w.dumps(table) for key, tables in blocks.items() for table in tables]
    return "\n".join(parts)


def _is_flat_table_array(key: str, value: Any) -> bool:
    # Only bare keys (a-z, digits, _ and -) are written as a header here without quoting.
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(t, Mapping) and not any(map(_holds_table, t.values())) for t in value)
        and key.replace("_", "").replace("-", "").isalnum()
        and key.isascii()
    )


def _holds_table(value: Any) -> bool:
    return isinstance(value, Mapping) or (isinstance(value, list | tuple) and any(map(_holds_table, value)))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the new one, whole.

    A temporary file in the same folder is written, fsync'd and renamed over ``path``, then the
    folder is fsync'd so the rename itself survives a crash. A replaced file keeps its mode; a
    new one gets the umask's default. Raises :class:`OSError` (the caller names the file).
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600 files
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _umask() -> int:
    # The only way to read the umask is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
