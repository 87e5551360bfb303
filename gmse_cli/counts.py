"""Counts as people write them: 200M parameters, 1.5B tokens, 6.1 GB (three significant digits)."""

from __future__ import annotations

__all__ = ["SUFFIXES", "si"]

# What a count's suffix multiplies it by, as people write it (either case): k, M, G or B, T.
SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}


def si(value: float, unit: str = "") -> str:
    """``200e6`` -> ``200M``; with a unit, ``6.1e9, "B"`` -> ``6.1 GB`` (G, not B, for 1e9)."""
    for size, prefix in ((1e12, "T"), (1e9, "G" if unit else "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g} {prefix}{unit}" if unit else f"{value / size:.3g}{prefix}"
    return f"{value:.3g} {unit}" if unit else f"{value:.3g}"
