"""Numbers that are pure functions of their key, remembered on disk per machine.

Some constants cost far more to compute than to read: a grid's optimal RMS scale takes a scan
of 241 quadratures and a root search (0.03-0.3 s, and 0.13 s to import scipy.optimize) and
never changes while its algorithm does not. Like numba's compiled kernels and the trained VQ
codebooks, such a number is computed once per machine and read afterwards, also under
``--recompute`` (which recomputes GMSEs, not the constants they are computed with).

One small JSON file per key under ``paths.cache_dir()/<namespace>/``, written atomically; a
file that is absent, damaged, or holds another key or a non-finite number reads as a miss, and
a cache that cannot be written costs time, never correctness. The key must name the
algorithm's version, so that a changed algorithm never reads an old value.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

from gmse_cli.atomic import write_atomic
from gmse_cli.cleanup import sweep_cache_folder
from gmse_cli.inputs import read_cache_bytes

__all__ = ["memo_dir", "remembered"]


def memo_dir(namespace: str) -> Path:
    """The folder of one namespace's remembered numbers (created if absent)."""
    from gmse_cli.paths import cache_dir

    path = cache_dir() / namespace
    path.mkdir(parents=True, exist_ok=True)
    sweep_cache_folder(path)  # temporary files killed writers left
    return path


def remembered(namespace: str, key: str, compute: Callable[[], float]) -> float:
    """The number stored under ``key``, else ``compute()``, stored for next time."""
    try:
        path = memo_dir(namespace) / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    except OSError:
        return compute()
    try:
        entry = json.loads(read_cache_bytes(path))
        value = float(entry["value"])
        if entry["key"] == key and math.isfinite(value):
            return value
    except (OSError, ValueError, TypeError, KeyError):
        pass
    value = compute()
    try:
        write_atomic(path, json.dumps({"key": key, "value": value}).encode(), durable=False)
    except OSError:
        pass
    return value
