"""Reading the files a user names: one place for the checks every input kind shares.

A name that cannot be a path (too long for the file system, a NUL byte) is a name, never an
error; a file is read only if it is a regular file of at most a documented size, as UTF-8; what
it parses to may nest at most :data:`MAX_NESTING` levels. Every failure is the caller's one-line
:class:`~gmse_cli.errors.UsclError` naming the file.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gmse_cli.errors import DataError, UsclError

__all__ = ["MAX_TEXT_BYTES", "MAX_RUNS_BYTES", "MAX_CODEBOOK_BYTES", "MAX_NESTING", "MAX_NAME_LENGTH", "user_path", "refuse_unreadable_kind", "exists", "does_not_exist", "is_file", "existing_files",
           "read_text_file", "read_binary_file", "read_cache_bytes", "parse_nested", "strict_json", "RepeatedKeyError",
           "printable_path"]

MAX_TEXT_BYTES = 16 << 20
"""Largest format, law or sweep file read (16 MiB): hand-written specs are a few KiB."""
MAX_RUNS_BYTES = 1 << 30
"""Largest runs file read (1 GiB, millions of runs)."""
MAX_CODEBOOK_BYTES = 64 << 20
"""Largest VQ codebook file (.npy) read: 2^16 codewords of 16 coordinates in 16-byte floats are 16 MiB."""
MAX_NESTING = 64
"""Deepest nesting of tables/arrays (TOML) or objects/arrays (JSON) accepted: specs use 3."""
MAX_NAME_LENGTH = 255
"""Longest file name (one path component) the usual file systems allow; a longer string is
taken as a name or a shorthand, never looked up as a file."""

_T = TypeVar("_T")
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
"""How an input is opened. O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
once open); Windows has no such flag (nor FIFOs in its file system) and opens a descriptor in
text mode unless O_BINARY is given (CRLF turned into LF, a 0x1A byte read as the end of file)."""
_BOMS = {codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16", codecs.BOM_UTF32_LE: "UTF-32",
         codecs.BOM_UTF32_BE: "UTF-32"}


def user_path(text: str | Path) -> Path:
    """``text`` as a path, a leading ``~`` read as the home folder (as the shell would have).

    Without $HOME and with a user id in no passwd file (a container's), there is no home folder:
    a :class:`~gmse_cli.errors.DataError` naming the value, where pathlib raises RuntimeError.
    """
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise DataError(f"cannot read '{text}': no home folder to expand '~' in (set HOME)") from None


def exists(text: str | Path) -> bool:
    """Whether ``text`` names an existing path; a string that cannot be a path names none."""
    try:
        return user_path(text).exists()
    except (OSError, ValueError, DataError):  # ENAMETOOLONG, an embedded NUL byte, no home for '~'
        return False


def does_not_exist(text: str | Path) -> str:
    """How an error says that ``text`` names no existing path: with the reason where its '~' has no
    home folder to expand to (the path was never looked up, so 'does not exist' would mislead)."""
    try:
        user_path(text)
    except DataError:
        return "does not exist: there is no home folder to expand '~' in (set HOME)"
    return "does not exist"


def is_file(text: str | Path) -> bool:
    """Whether ``text`` names an existing file; a string that cannot be a path is not one."""
    try:
        return user_path(text).is_file()
    except (OSError, ValueError, DataError):  # ENAMETOOLONG, ELOOP, an embedded NUL byte, no home for '~'
        return False


def existing_files(*items: str | Path | None) -> list[str | Path]:
    """The ``items`` that name an existing file, of a command's inputs that may be names or paths
    (a format, a law, a checkpoint): what an output must not replace (:func:`gmse_cli.atomic.check_output_path`)."""
    return [item for item in items if item is not None and is_file(item)]


def printable_path(path: str | Path) -> str:
    """``path`` as text every writer takes (JSON, TOML, a validated model): a name's bytes that
    are not UTF-8, which Python reads as lone surrogates, shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_text_file(path: str | Path, *, what: str, error: type[UsclError], limit: int = MAX_TEXT_BYTES,
                   read_error: type[UsclError] | None = None) -> str:
    """The UTF-8 text of the regular file ``path`` (a UTF-8 byte-order mark dropped), at most
    ``limit`` bytes.

    A FIFO, a device (``/dev/zero``) or a folder is refused before reading (such a "file" may
    never end); a larger file is refused before it is read. A file that cannot be read raises
    ``read_error`` (default ``error``).
    """
    path, data = _read_regular(path, what=what, error=error, failed=read_error or error, limit=limit)
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise error(f"{what} {path} is {name} text; save it as UTF-8")
    if _utf16_without_bom(data):
        raise error(f"{what} {path} is UTF-16 text (without a byte-order mark); save it as UTF-8")
    # A UTF-8 byte-order mark (Excel's "CSV UTF-8", Windows editors) is a signature, not text:
    # left in, it glues itself to the first column name or key.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def _utf16_without_bom(data: bytes) -> bool:
    """Whether ``data`` starts as UTF-16 text with no byte-order mark would (some Windows tools
    write it so): an ASCII character and a NUL byte, in either order. UTF-8 text never starts
    with a NUL; read as UTF-8 it was a parse error about a NUL or a column named 'N\\x00'."""
    return len(data) >= 2 and (data[0] == 0) != (data[1] == 0) and max(data[0], data[1]) < 0x80


def read_binary_file(path: str | Path, *, what: str, error: type[UsclError], limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; refused as
    :func:`read_text_file` refuses (a FIFO, a device, a folder, a larger file), never waited on."""
    return _read_regular(path, what=what, error=error, failed=error, limit=limit)[1]


def refuse_unreadable_kind(path: str | Path, mode: int, *, what: str, error: type[UsclError]) -> None:
    """Raise ``error`` naming ``path`` unless its ``st_mode`` is a regular file's: a folder,
    or a FIFO or a device (which may never end, or be waited on for ever)."""
    if stat.S_ISDIR(mode):
        raise error(f"cannot read {what} {path}: it is a folder")
    if not stat.S_ISREG(mode):
        raise error(f"cannot read {what} {path}: not a regular file (a pipe or a device)")


def _read_regular(path: str | Path, *, what: str, error: type[UsclError], failed: type[UsclError],
                  limit: int) -> tuple[Path, bytes]:
    try:
        path = user_path(path)  # '--law=~/law.toml': no shell expands a '~' after '='
    except DataError as exc:
        raise failed(str(exc)) from None
    try:
        with os.fdopen(os.open(path, _READ_FLAGS), "rb") as handle:  # a FIFO is refused just below
            info = os.fstat(handle.fileno())
            refuse_unreadable_kind(path, info.st_mode, what=what, error=failed)
            if info.st_size > limit:
                raise error(f"{what} {path} is {info.st_size / 2**20:.1f} MiB; the limit is {limit / 2**20:g} MiB")
            data = handle.read(limit + 1)
    except IsADirectoryError:
        raise failed(f"cannot read {what} {path}: it is a folder") from None
    except UsclError:  # refused just above (LawError and SpecError are ValueErrors: not wrapped again)
        raise
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise failed(f"cannot read {what} {path}: {reason}") from None
    if len(data) > limit:  # grew while read
        raise error(f"{what} {path} is larger than the limit of {limit / 2**20:g} MiB")
    return path, data


def read_cache_bytes(path: Path) -> bytes:
    """The bytes of the cache entry ``path``; OSError when it is no regular file (a FIFO left in
    a cache folder was waited on for ever), which every cache reader takes as a damaged entry."""
    with os.fdopen(os.open(path, _READ_FLAGS), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read()


def parse_nested(parse: Callable[[str], _T], text: str, *, where: str, error: type[UsclError]) -> _T:
    """``parse(text)``, refusing data nested deeper than :data:`MAX_NESTING` levels.

    A parser recursing past Python's stack limit is the same error, never a RecursionError; an
    integer literal of thousands of digits is one error too, never the bare ValueError of
    Python's integer conversion limit.
    """
    try:
        data = parse(text)
    except RecursionError:
        raise error(f"{where}: nests deeper than {MAX_NESTING} levels") from None
    except RepeatedKeyError as exc:
        raise error(f"{where}: the key {exc.key!r} appears twice in one object, so which value is meant "
                    "is unknown; keep one") from None
    except ValueError as exc:
        if type(exc) is not ValueError:  # the parser's own syntax error: its caller words it
            raise
        # Python refuses to convert an integer of thousands of digits (CVE-2020-10735)
        raise error(f"{where}: holds a number too long to read ({str(exc).split(';')[0]})") from None
    if _depth(data) > MAX_NESTING:
        raise error(f"{where}: nests deeper than {MAX_NESTING} levels")
    return data


class RepeatedKeyError(ValueError):
    """A JSON object names one key twice (:func:`strict_json`)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"repeated key {key!r}")
        self.key = key


def strict_json(text: str) -> Any:
    """``json.loads(text)``, refusing an object that names one key twice.

    Python's parser keeps the last value silently; for a run's loss or a format's group size
    that is a silent guess, so data files are read with this instead.
    """
    return json.loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKeyError(key)
        obj[key] = value
    return obj


def _depth(data: Any) -> int:
    # Iterative, so that checking the depth cannot itself overflow the stack.
    deepest, stack = 0, [(data, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            deepest = max(deepest, level)
            continue
        deepest = max(deepest, level + 1)
        if level + 1 > MAX_NESTING:
            return level + 1
        stack.extend((child, level + 1) for child in children)
    return deepest
