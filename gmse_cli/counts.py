"""Counts as people write them: 200M parameters, 1.5B tokens, 6.1 GB (three significant digits)."""

from __future__ import annotations

import re

__all__ = ["SUFFIXES", "SLIP_BELOW", "parse_count", "parse_per_param", "likely_meant", "si"]

# What a count's suffix multiplies it by, as people write it (either case): k, M, G or B, T.
SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}

# ASCII digits only (re.ASCII: float() would read another script's digits, and '1_000'), the
# suffix written against the number ('7 B' and '20 x' are refused, as a typo splitting two words
# would be)
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_COUNT = re.compile(rf"^\s*({_NUMBER})([kmgbt]?)\s*$", re.IGNORECASE | re.ASCII)
_PER_PARAM = re.compile(rf"^\s*({_NUMBER})x\s*$", re.IGNORECASE | re.ASCII)


def parse_count(text: str) -> float | None:
    """``'200e6'``, ``'200M'``, ``'1.5B'`` -> the count (any sign, maybe not finite: the caller
    checks); None for text that is no count."""
    match = _COUNT.match(text)
    return float(match[1]) * SUFFIXES[match[2].lower()] if match else None


SLIP_BELOW = 1e4
"""A bare count under this (``--params 7``) is most likely a slip for 7B or 5000M (:func:`likely_meant`): no model
trains on so few parameters or tokens, while the smallest CPU preset has 5.6e4 non-embedding
parameters (tiny-50k) and 20 tokens per parameter of it are 1.1e6 tokens: one who predicts
for uscl's tiny CPU models is never warned."""

_BARE = re.compile(r"^\s*\+?(?:\d+(?:\.\d*)?|\.\d+)\s*$", re.ASCII)


def likely_meant(text: str) -> tuple[str, str] | None:
    """``'7'`` -> ``('7B', 'billion')``, ``'5000'`` -> ``('5000M', 'million')``: the count ``text``
    was most likely meant as, where it is written bare (no suffix, no exponent: '7k' and '5e3'
    say what they mean) and is under :data:`SLIP_BELOW`; else None. Under 1,000 that is
    billions (7B, 0.5B); from 1,000 millions, since 5000B (5T) is no likelier a slip than 5000M."""
    if not _BARE.match(text) or not 0 < (value := float(text)) < SLIP_BELOW:
        return None
    digits = text.strip().lstrip("+")
    return (f"{digits}B", "billion") if value < 1000 else (f"{digits}M", "million")


def parse_per_param(text: str) -> float | None:
    """``'100x'`` (tokens per parameter) -> 100.0; None for text that is no such ratio."""
    match = _PER_PARAM.match(text)
    return float(match[1]) if match else None


def si(value: float, unit: str = "") -> str:
    """``200e6`` -> ``200M``; with a unit, ``6.1e9, "B"`` -> ``6.1 GB`` (G, not B, for 1e9)."""
    for size, prefix in ((1e12, "T"), (1e9, "G" if unit else "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g} {prefix}{unit}" if unit else f"{value / size:.3g}{prefix}"
    return f"{value:.3g} {unit}" if unit else f"{value:.3g}"
