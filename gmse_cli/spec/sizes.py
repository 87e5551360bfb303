"""What the stages share: how many elements one scale covers, whether a size divides a row, a
group size checked as a number, and how a fraction of a count rounds to whole entries."""

from __future__ import annotations

import math
from typing import Any

from gmse_cli.errors import SpecError
from gmse_cli.spec.vocab import MAX_ROW_LENGTH, Granularity

__all__ = ["granularity_size", "check_divides", "checked_group_size", "round_count"]


def granularity_size(granularity: Granularity, row_length: int) -> float:
    """Elements sharing one scale (a tensor counts as unbounded)."""
    if granularity == "tensor":
        return math.inf
    if granularity == "row":
        return float(row_length)
    return float(granularity)


def check_divides(what: str, size: int, row_length: int) -> None:
    if row_length % size:
        raise SpecError(f"{what} {size} does not divide the row length {row_length}")


def checked_group_size(value: Any, stage: str, names: str = "'row', 'tensor'") -> Any:
    """A whole-number group size checked here, so that 0 or 10^30 is named as a group size (not
    as "neither 'row' nor 'tensor'") and no group exceeds the longest row; anything else as is."""
    if type(value) is int and not 1 <= value <= MAX_ROW_LENGTH:
        raise SpecError(f"{stage}: group {value} must be {names} or a whole number from 1 to {MAX_ROW_LENGTH:,}")
    return value


def round_count(fraction: float, n: int) -> int:
    """``round(fraction * n)``, half-up, clipped to [0, n]: the entries (or blocks) pruning keeps
    or zeroes, shared by the compressors and the bit accounting so the two count alike."""
    return min(n, max(0, math.floor(fraction * n + 0.5)))
