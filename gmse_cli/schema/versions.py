"""The schema versions of the files uscl writes and reads back, and the refusal of a newer one.

A results record (one line of ``uscl train``'s results file) and a law file carry
``schema_version``; a reader that meets a version above the one it knows refuses it in one line
saying to upgrade, rather than read fields whose meaning may have changed.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["RESULTS_SCHEMA_VERSION", "LAW_SCHEMA_VERSION", "newer_schema", "bad_schema", "newer_writer"]

RESULTS_SCHEMA_VERSION = 1
"""The ``schema_version`` of the records ``uscl train`` writes (``gmse_cli.training.results``)."""

LAW_SCHEMA_VERSION = 1
"""The ``schema_version`` of the law files uscl writes (``gmse_cli.law.files``); a law file
without the key (every one written before it was added) is version 1."""


def newer_schema(value: Any, supported: int, what: str) -> str | None:
    """The one-line refusal of ``schema_version = value`` when it is a whole number above
    ``supported`` (a file written by a newer uscl); None for any other value."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= supported:
        return None
    from gmse_cli import __version__

    return (f"{what} has schema_version {value}, written by a newer uscl; uscl {__version__} reads "
            f"schema_version {supported} at most: upgrade uscl (pip install -U uscl) to read it")


def bad_schema(value: Any, supported: int, what: str) -> str | None:
    """The one-line refusal of a given ``schema_version = value`` that this uscl cannot read:
    a newer one (:func:`newer_schema`), or no integer from 1 to ``supported`` (``2.0``, ``0``,
    ``"1"``, ``true``), named as it was written; None for a version this uscl reads."""
    if (newer := newer_schema(value, supported, what)) is not None:
        return newer
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value:
        return None
    from gmse_cli import __version__

    known = "1" if supported == 1 else f"1 to {supported}"
    kind = ("a boolean" if isinstance(value, bool) else "a float" if isinstance(value, float)
            else "text" if isinstance(value, str) else None if isinstance(value, int) else "no number")
    shown = (str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str | float)
             else "null" if value is None else str(value))
    said = f"{what} has schema_version {shown}, " + (f"{kind} where an integer is expected" if kind else "which no uscl writes")
    hint = (" (a newer schema needs a newer uscl: pip install -U uscl)"
            if isinstance(value, float) and supported < value < float("inf") else "")
    return f"{said}; uscl {__version__} reads schema_version {known}{hint}"


_RELEASE = re.compile(r"\s*v?(\d{1,20}(?:\.\d{1,20})*)", re.ASCII)


def _release(text: str) -> tuple[int, ...] | None:
    # PEP 440's release segment, trailing zeros left out: "1.2.0" -> (1, 2), "0.2.dev0" and
    # "0.2rc1" -> (0, 2), "1.0.post1+local" -> (1,); no leading number -> None. A pre, post or
    # dev release compares as its release: newer only when its release is.
    match = _RELEASE.match(text)
    if match is None:
        return None
    release = [int(p) for p in match[1].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    return tuple(release)


def newer_writer(written_by: Any) -> str | None:
    """What to do about a file whose ``uscl_version`` (the uscl that wrote it) is newer than this
    one, for a refusal to add: a key this uscl does not know is then no misspelling. None when
    the version is this one's or older, or no version number."""
    from gmse_cli import __version__

    if not isinstance(written_by, str):
        return None
    theirs, ours = _release(written_by), _release(__version__)
    if theirs is None or ours is None or theirs <= ours:
        return None
    return f"written by uscl {written_by.strip()}, newer than this uscl {__version__}: upgrade uscl (pip install -U uscl) to read it"
