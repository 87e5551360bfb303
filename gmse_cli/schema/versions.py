"""The schema versions of the files uscl writes and reads back, and the refusal of a newer one.

A results record (one line of ``uscl train``'s results file) carries ``schema_version``; a
reader that meets a version above the one it knows refuses it in one line saying to upgrade,
rather than read fields whose meaning may have changed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESULTS_SCHEMA_VERSION", "newer_schema", "newer_writer"]

RESULTS_SCHEMA_VERSION = 1
"""The ``schema_version`` of the records ``uscl train`` writes (``gmse_cli.training.results``)."""


def newer_schema(value: Any, supported: int, what: str) -> str | None:
    """The one-line refusal of ``schema_version = value`` when it is a whole number above
    ``supported`` (a file written by a newer uscl); None for any other value."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= supported:
        return None
    from gmse_cli import __version__

    return (f"{what} has schema_version {value}, written by a newer uscl; uscl {__version__} reads "
            f"schema_version {supported} at most: upgrade uscl (pip install -U uscl) to read it")


def _release(text: str) -> tuple[int, ...] | None:
    # "1.2.3" -> (1, 2, 3); a local or dev suffix after the release is left out; no number -> None
    parts = text.strip().split("+")[0].split(".")[:3]
    return tuple(int(p) for p in parts) if all(p.isascii() and p.isdigit() for p in parts) else None


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
