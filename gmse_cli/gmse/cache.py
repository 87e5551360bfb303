"""The on-disk cache of computed GMSEs: every format outside the shipped table.

One small JSON file per key (:func:`~gmse_cli.gmse.stored.gmse_key`) under
``paths.cache_dir()/gmse/``, each written atomically (:mod:`gmse_cli.atomic`): processes that
compute the same format at once each leave a whole file, and a reader sees the old file or a
new one, never a mixture. A file that is absent, unreadable, damaged or stored under another
key reads as a miss, and the next computation replaces it.
"""

from __future__ import annotations

from pathlib import Path

from gmse_cli.atomic import write_atomic
from gmse_cli.cleanup import sweep_cache_folder
from gmse_cli.gmse.stored import StoredGmse
from gmse_cli.inputs import read_cache_bytes

__all__ = ["gmse_cache_dir", "read_cached", "write_cached"]


def gmse_cache_dir() -> Path:
    """The cache folder of GMSEs (created if absent)."""
    from gmse_cli.paths import cache_dir

    path = cache_dir() / "gmse"
    path.mkdir(parents=True, exist_ok=True)
    sweep_cache_folder(path)  # temporary files killed writers left
    return path


def read_cached(key: str) -> StoredGmse | None:
    """The cached entry of ``key``, or None (absent or damaged: compute it again)."""
    try:
        entry = StoredGmse.model_validate_json(read_cache_bytes(gmse_cache_dir() / f"{key}.json"))
    except (OSError, ValueError):
        return None
    return entry if entry.key == key else None


def write_cached(entry: StoredGmse) -> None:
    """Store ``entry`` under its key, with the umask's mode as every file uscl makes (it was forced
    0644: not group-writable in a group's cache under umask 002, world-readable under 077).

    A cache that cannot be written (a read-only home, a full disk) costs speed, not
    correctness: the entry is then simply not stored. Not fsync'd (``uscl gmse --all
    --recompute`` writes 70 entries): one a crash leaves damaged reads as a miss. A file that
    already holds exactly these bytes (a recomputation on the same seed) is left alone."""
    data = entry.model_dump_json(indent=1).encode()
    try:
        path = gmse_cache_dir() / f"{entry.key}.json"
        if path.is_file() and path.read_bytes() == data:
            return
        write_atomic(path, data, durable=False)
    except OSError:
        pass
