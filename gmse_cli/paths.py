"""Where the shipped data folders are: in a source checkout, or inside an installed wheel."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from gmse_cli.errors import CacheError

__all__ = ["catalog_dir", "sweeps_dir", "laws_dir", "cache_dir"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(package_folder: str, repo_folder: str) -> Path:
    # A source checkout (editable install or plain PYTHONPATH) reads the top-level folder the
    # user edits; a wheel carries the same files mapped into the package (pyproject.toml).
    local = _REPO_ROOT / repo_folder
    if local.is_dir() and (_REPO_ROOT / "pyproject.toml").is_file():
        return local
    return Path(__file__).resolve().parent / package_folder


@cache
def catalog_dir() -> Path:
    """The folder of shipped format TOML files (``formats/``)."""
    return _data_dir("catalog", "formats")


@cache
def sweeps_dir() -> Path:
    """The folder of shipped sweep specs (``train/``)."""
    return _data_dir("sweeps", "train")


def laws_dir() -> Path:
    """The folder of shipped law files (package data)."""
    return Path(__file__).resolve().parent / "laws"


def cache_dir() -> Path:
    """Per-user cache (computed GMSE estimates and codebooks): ``$USCL_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/uscl`` (an absolute one, as the XDG rules ask), else ~/.cache/uscl. numba
    keeps its compiled kernels apart, beside the modules (or in ``$NUMBA_CACHE_DIR``)."""
    root = os.environ.get("USCL_CACHE_DIR")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    try:
        # '~' expanded as in every path uscl reads: a value the shell did not expand (quoted, or
        # from a service file) made a folder named '~' in the working directory.
        if root:
            path = Path(root).expanduser()
        else:
            path = (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "uscl"
    except RuntimeError:  # no $HOME and a user id with no passwd entry (a container's)
        raise CacheError("cannot find the home folder for the cache (set USCL_CACHE_DIR or HOME)") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only home
        raise CacheError(f"cannot use cache folder '{path}': {(exc.strerror or str(exc)).lower()} "
                         "(set USCL_CACHE_DIR to a writable folder)") from None
    return path
