"""TOML files: read one with a one-line error, render data as TOML, write a file atomically.

The one TOML writer of uscl (format files, law files): values, keys and string escapes are
tomli-w's, so whatever it writes :mod:`tomllib` reads back to equal data (a description with a
newline included). Only the top-level arrays of flat tables (a format's ``stages``) are laid out
here, always as ``[[key]]`` blocks: tomli-w inlines the short ones, which would give a file two
layouts depending on line length.

A large file (a law with thousands of joint draws) is parsed once per content: its data is kept
as JSON in the uscl cache, keyed by the SHA-256 of the text, because tomllib takes 40 ms on the
shipped law that every ``rank`` and ``predict`` reads.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from gmse_cli.atomic import write_atomic
from gmse_cli.cleanup import sweep_cache_folder
from gmse_cli.errors import UsclError
from gmse_cli.inputs import parse_nested, read_cache_bytes, read_text_file
from gmse_cli.paths import cache_dir

__all__ = ["read_toml", "read_tomls", "dumps_toml", "CACHE_FROM_BYTES"]


def read_toml(
    path: str | Path, *, what: str, error: type[UsclError], read_error: type[UsclError] | None = None
) -> dict[str, Any]:
    """The top-level table of the TOML file ``path``.

    A file that cannot be read raises ``read_error`` (default ``error``); one that is not UTF-8,
    larger than :data:`~gmse_cli.inputs.MAX_TEXT_BYTES` or nested deeper than
    :data:`~gmse_cli.inputs.MAX_NESTING`, or malformed TOML, raises ``error``; both messages name ``what`` ("format file", "law file") or the path.
    """
    path = Path(path)
    text = read_text_file(path, what=what, error=error, read_error=read_error)
    cached = _cache_path(text) if len(text) >= CACHE_FROM_BYTES else None
    data = _parsed_once(cached, lambda: _parse(path, text, error))
    return data if isinstance(data, dict) else _parse(path, text, error)  # (a damaged cache entry)


def read_tomls(paths: list[Path], *, what: str, error: type[UsclError]) -> list[dict[str, Any]]:
    """The top-level tables of many small TOML files (the catalog's 72 format files), parsed
    once per content of them all: one JSON file in the cache holds every table, which saves
    the 12 ms tomllib takes on them in every `uscl rank`. Errors as in :func:`read_toml`."""
    texts = [read_text_file(p, what=what, error=error) for p in paths]
    key = "\0".join(f"{p.name}\0{t}" for p, t in zip(paths, texts, strict=True))
    tables = _parsed_once(_cache_path(key), lambda: [_parse(p, t, error) for p, t in zip(paths, texts, strict=True)])
    if not (isinstance(tables, list) and len(tables) == len(paths) and all(isinstance(t, dict) for t in tables)):
        tables = [_parse(p, t, error) for p, t in zip(paths, texts, strict=True)]  # a damaged cache entry
    return tables


def _parse(path: Path, text: str, error: type[UsclError]) -> dict[str, Any]:
    try:
        return parse_nested(tomllib.loads, text, where=str(path), error=error)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: malformed TOML: {exc}") from None


_CACHE_VERSION = 1
"""Version of what a cache entry holds (bump it when :func:`_parse` changes what it returns)."""


def _parsed_once(cached: Path | None, parse: Callable[[], Any]) -> Any:
    """The JSON kept at ``cached`` if whole, else ``parse()``, kept there for next time.

    An entry is a header line (this module's cache version and the SHA-256 of the payload) and
    the payload, one line of JSON: an entry edited, cut short, damaged or written by another
    version fails the header and is parsed again, never served (a valid JSON payload of other
    values would otherwise pass for the file's)."""
    if cached is not None:
        data = _read_entry(cached)
        if isinstance(data, dict | list):
            return data
    data = parse()
    if cached is not None:
        try:  # TOML dates have no JSON form: such a file is simply parsed every time
            payload = json.dumps(data).encode()
            header = json.dumps({"version": _CACHE_VERSION, "sha256": hashlib.sha256(payload).hexdigest()})
            write_atomic(cached, header.encode() + b"\n" + payload, durable=False)
        except (OSError, TypeError, ValueError):
            pass
    return data


def _read_entry(cached: Path) -> Any:
    """The payload of the cache entry ``cached``, or None (absent, damaged or another version's)."""
    try:
        header, _, payload = read_cache_bytes(cached).partition(b"\n")
        expected = {"version": _CACHE_VERSION, "sha256": hashlib.sha256(payload).hexdigest()}
        return json.loads(payload) if json.loads(header) == expected else None
    except (OSError, ValueError, RecursionError):
        return None  # not cached yet (or unreadable): parse


CACHE_FROM_BYTES = 16384
"""TOML texts at least this long are parsed once and kept as JSON (module docstring)."""


def _cache_path(text: str) -> Path | None:
    try:
        folder = cache_dir() / "toml"
        folder.mkdir(exist_ok=True)
        sweep_cache_folder(folder)  # temporary files killed writers left
    except OSError:
        return None
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


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
