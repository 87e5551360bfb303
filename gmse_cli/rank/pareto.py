"""Ordering rows: the Pareto frontier of bits per parameter against capacity, and sorting."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gmse_cli.errors import SpecError, closest, described, list_of
from gmse_cli.rank.results import RankRow

__all__ = ["pareto_mask", "pareto_front", "sort_rows", "SORT_COLUMNS"]

SORT_COLUMNS: tuple[str, ...] = tuple(k for k in RankRow.model_fields if k not in ("law", "level", "params", "tokens"))
# Columns where more is better sort descending by default.
_DESCENDING = {"rho", "rho_low", "rho_high", "rho_single_gmse", "effective_bits", "effective_params", "pareto"}


def pareto_mask(bits: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """True where no other point has bits <= and rho >= with one of them strict.

    Sweep in order of bits: a point is on the frontier when its rho is the best among equal
    bits and strictly above the best rho of every cheaper point. O(n log n).
    """
    for what, values in (("bits", bits), ("rho", rho)):
        if not (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "iuf"):
            raise SpecError(f"pareto_mask takes 1-d number arrays, not {what} = {described(values)}")
    if bits.shape != rho.shape:
        raise SpecError(f"pareto_mask: bits ({bits.size}) and rho ({rho.size}) differ in length")
    n = bits.size
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort((-rho, bits))  # by bits, then best rho first
    best_cheaper = -math.inf
    i = 0
    while i < n:
        j = i
        while j < n and bits[order[j]] == bits[order[i]]:
            j += 1
        group = order[i:j]
        top = rho[group[0]]
        if top > best_cheaper:
            mask[group[rho[group] == top]] = True
        best_cheaper = max(best_cheaper, top)
        i = j
    return mask


def _rank_rows(rows: Sequence[RankRow], caller: str) -> list[RankRow]:
    """``rows`` as a list, or one SpecError naming the first item that is no RankRow."""
    return list_of(rows, RankRow, SpecError, f"{caller} takes a list of RankRows (rank() gives one)")


def pareto_front(rows: Sequence[RankRow]) -> list[RankRow]:
    """The rows no other row beats on both bits per parameter and capacity, by bits."""
    rows = _rank_rows(rows, "pareto_front")
    mask = pareto_mask(np.array([r.bits_per_param for r in rows]), np.array([r.rho for r in rows]))
    return sorted((r for r, on in zip(rows, mask, strict=True) if on), key=lambda r: r.bits_per_param)


def sort_rows(rows: Sequence[RankRow], column: str, *, reverse: bool = False) -> list[RankRow]:
    """Rows sorted by ``column`` (a :class:`RankRow` field): ascending, except where more is
    better (rho, effective bits or parameters, pareto); ``reverse`` flips it. Missing values
    (None) go last either way; ties keep their order."""
    if not isinstance(column, str) or column not in SORT_COLUMNS:
        hint = closest(column, list(SORT_COLUMNS)) if isinstance(column, str) else ""
        raise SpecError(f"cannot sort by '{column}'{hint} (columns: {', '.join(SORT_COLUMNS)})")
    if not isinstance(reverse, bool | np.bool_):  # a nan or text would flip the order by its truth
        raise SpecError(f"reverse must be True or False, not {described(reverse)}")
    rows = _rank_rows(rows, "sort_rows")
    descending = (column in _DESCENDING) != bool(reverse)
    present = [r for r in rows if getattr(r, column) is not None]
    missing = [r for r in rows if getattr(r, column) is None]
    return sorted(present, key=lambda r: getattr(r, column), reverse=descending) + missing
