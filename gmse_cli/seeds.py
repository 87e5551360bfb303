"""Seeds: whole numbers from 0 to 2**63 - 1 (what numpy's and torch's generators both take)."""

from __future__ import annotations

import numbers

from gmse_cli.errors import SpecError

__all__ = ["MAX_SEED", "check_seed"]

MAX_SEED = 2**63 - 1


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int, or one :class:`SpecError` naming it (a bool, a float, text or a number
    outside 0 .. 2**63 - 1 would otherwise fail deep in numpy, or silently pick another stream)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise SpecError(f"{what} = {seed!r} must be a whole number from 0 to 2**63 - 1")
    return int(seed)
