"""Limits of inputs that several rooms share, and their checks (the README's "Limits").

Seeds are whole numbers from 0 to 2**63 - 1 (what numpy's and torch's generators both take);
bootstrap refits at most :data:`MAX_BOOTSTRAP`. On the ground floor, so that the command line
checks its options against the same numbers without importing the library.
"""

from __future__ import annotations

import numbers

from gmse_cli.errors import SpecError

__all__ = ["MAX_SEED", "MAX_BOOTSTRAP", "MAX_THREADS", "MAX_SEARCH_BITS", "check_seed", "is_whole", "is_real", "is_flag"]

MAX_SEED = 2**63 - 1

MAX_BOOTSTRAP = 100_000
"""Bootstrap refits of a fit (more adds nothing to a printed interval, as for --draws)."""

MAX_THREADS = 1024
"""CPU threads a command may ask torch for (100,000 made OpenMP crash the process)."""

MAX_SEARCH_BITS = 64
"""The largest ``uscl search --bits`` budget: the space's widest format (fp32 at 32 bits, with
its scales) lies well below it, so a larger budget could find nothing more."""


def is_whole(value: object) -> bool:
    """An integer (Python's or numpy's), and not a bool (which Python counts as one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (Python's or numpy's, nan and inf included), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_flag(value: object) -> bool:
    """True or False: Python's bool or numpy's (a 0-d bool array too), never text, a number, a
    container or an object whose truth Python would take silently."""
    if isinstance(value, bool):
        return True
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and getattr(dtype, "kind", None) == "b"


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int, or one :class:`SpecError` naming it (a bool, a float, text or a number
    outside 0 .. 2**63 - 1 would otherwise fail deep in numpy, or silently pick another stream)."""
    if not (is_whole(seed) and 0 <= seed <= MAX_SEED):
        raise SpecError(f"{what} = {seed!r} must be a whole number from 0 to 2**63 - 1")
    return int(seed)


MEMO_ENTRIES = 4096
"""The most entries a per-process cache keyed by what a user names (a grid, a group size, a
format) holds: a long-lived program (a service ranking its users' formats) keeps its memory
bounded; a dropped entry is recomputed, or read back from the disk memo."""


def keep_bounded(memo: dict, key: object, value: object, limit: int = MEMO_ENTRIES) -> None:
    """``memo[key] = value``, first dropping the oldest entries past ``limit`` (a per-process
    memo keyed by what a user names stays bounded in a long-lived program)."""
    while len(memo) >= limit:
        memo.pop(next(iter(memo)))
    memo[key] = value
