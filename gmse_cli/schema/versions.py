"""The schema versions of the files uscl writes and reads back, and the refusal of a newer one.

A results record (one line of ``uscl train``'s results file) carries ``schema_version``; a
reader that meets a version above the one it knows refuses it in one line saying to upgrade,
rather than read fields whose meaning may have changed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RESULTS_SCHEMA_VERSION", "newer_schema"]

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
