"""The catalog names nearest to a name that is none: the "did you mean" of an unknown format.

Computed from the catalog itself, never from a table of aliases: a name is compared with each
catalog name with case, '-', '_', '.' and spaces left out and 'float' read as 'fp' (torch's
``float16``, ``bfloat16``), and an fp format also answers to its element grid written after its
name (``fp4e2m1`` is fp4). A name that stops short of several catalog names (``fp8``: there are
two) gets them all, so the answer never picks one of two 8-bit floats for the user, or a 4-bit
one for ``fp8``; anything else gets the closest by :func:`difflib.get_close_matches`.
"""

from __future__ import annotations

import difflib
import re

from gmse_cli.spec.catalog import catalog

__all__ = ["did_you_mean", "nearest_formats", "spelling_key"]

_MOST_LISTED = 4
"""The most names one hint lists (``sparse`` stops short of nine)."""


def spelling_key(text: str) -> str:
    """``text`` as compared with catalog names: lower case, no separators, 'float' as 'fp'."""
    key = text.strip().lower().replace("float", "fp")  # bfloat16 -> bfp16 -> (below) bf16
    return re.sub(r"[\s_.\-]+", "", key).replace("bfp", "bf")


def _keys(name: str) -> list[str]:
    """The keys a catalog name answers to: its own, and an fp format's with its element grid."""
    keys = [spelling_key(name)]
    stages = catalog()[name].stages
    stage = stages[0] if len(stages) == 1 else None
    exponent, mantissa = getattr(stage, "exponent_bits", None), getattr(stage, "mantissa_bits", None)
    if exponent is not None and mantissa is not None and f"e{exponent}m{mantissa}" not in keys[0]:
        keys.append(f"{keys[0]}e{exponent}m{mantissa}")
    return keys


def _stops_short_of(key: str, names: list[str]) -> list[str]:
    """The catalog names ``key`` is the start of, up to a '-' ('fp8' -> 'fp8-e4m3', 'fp8-e5m2'),
    leaving out those that only extend another of them ('mxfp8-e4m3-rceil')."""
    found = []
    for name in names:
        pieces = name.split("-")
        if any(spelling_key("-".join(pieces[:cut])) == key for cut in range(1, len(pieces))):
            found.append(name)
    return sorted(n for n in found if not any(n.startswith(f"{other}-") for other in found if other != n))


def nearest_formats(text: str) -> list[str]:
    """The catalog names a user who typed ``text`` most likely meant (none where none is close)."""
    names = list(catalog())
    key = spelling_key(text)
    by_key: dict[str, str] = {}
    for name in names:
        for k in _keys(name):
            by_key.setdefault(k, name)
    if key in by_key:
        return [by_key[key]]
    if longer := _stops_short_of(key, names):
        return longer
    return [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=1)]


def did_you_mean(names: list[str]) -> str:
    """'; did you mean 'a'?' / '; did you mean 'a' or 'b'?' (the hint after an unknown name)."""
    quoted = [f"'{n}'" for n in names[:_MOST_LISTED]]
    if len(names) > _MOST_LISTED:
        quoted[-1] += f" ({len(names)} in all: see `uscl formats`)"
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"; did you mean {listed}?"
