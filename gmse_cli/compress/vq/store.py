"""Codebook records, the on-disk codebook cache and the codebooks shipped with the package.

Computed codebooks (and the records of every codebook: how it was made, its scale constant and
Gaussian MSE) live under ``cache_dir()/codebooks`` as ``STEM.npy`` and ``STEM.json``; each stem
carries :data:`ALGORITHM_VERSION`, so a change of construction never reads a stale entry. The
Gaussian codebooks of the catalog's sizes ship with the package (:func:`shipped_dir`, the same
files, made by :mod:`gmse_cli.compress.vq.shipped`) and are read from there first.

Each record holds the SHA-256 of its ``STEM.npy`` bytes (``sha256``), checked whenever the array
is read: a file edited, cut short or damaged in place (the right shape, other values) reads as
a miss, with one note on stderr, and the codebook is trained again and rewritten atomically, as
every other cache recomputes a damaged entry. A cache entry written before records carried the
digest is stamped with the digest of its bytes when first read (training it again could take
hours); a shipped codebook with no digest is read as it is (the package's are all stamped).
"""

from __future__ import annotations

import errno
import hashlib
import io
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from gmse_cli.atomic import write_atomic
from gmse_cli.cleanup import sweep_cache_folder
from gmse_cli.errors import CacheError
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import read_cache_bytes
from gmse_cli.messages import cache_note, clear_cache_note, note

__all__ = [
    "ALGORITHM_VERSION",
    "LLOYD_SEED",
    "CodebookInfo",
    "codebook_dir",
    "shipped_dir",
    "save_codebook",
    "load_codebook",
    "cached_codebook",
    "keep_codebook",
    "clear_unkept_note",
]

ALGORITHM_VERSION = 4
"""Bumped whenever codebook construction, training, the constant search or the VQ compressor
(with its group scales, :mod:`gmse_cli.compress.group_stats`) changes; part of every codebook
cache key and of the key of every stored GMSE (:mod:`gmse_cli.gmse.stored`), so stale entries
are simply never read. 3: exact Lloyd-Max levels in 1-D; in 2-D and up, scrambled-Sobol
samples and utility moves (LBG-U) after LBG. 4: exact Lloyd-Max levels in 1-D up to 2^16
levels (not only 2^8); 2-D and up unchanged (the shipped codebooks are version 3's)."""

LLOYD_SEED = 20250602
"""Seed of the Gaussian training samples (fixed: the same codebook on every machine run)."""


class CodebookInfo(Frozen):
    """What a codebook is and how well it quantizes a standard normal source."""

    kind: Literal["gaussian", "e8", "file"]
    dim: int
    index_bits: int = Field(description="log2 of the codeword count")
    codewords: int
    scale_constant: float = Field(description="s = constant * RMS minimizes the Gaussian MSE")
    mse: float = Field(description="per-coordinate MSE on fresh N(0, 1) vectors at the constant")
    mse_samples: int = Field(description="vectors behind `mse`")
    algorithm_version: int = ALGORITHM_VERSION
    seed: int | None = Field(default=None, description="gaussian: seed of the training samples")
    train_samples: int | None = None
    train_iterations: int | None = None
    train_mse: float | None = Field(default=None, description="gaussian: MSE on the training samples")
    train_moves: int | None = Field(default=None, description="gaussian: utility moves kept (LBG-U)")
    method: str | None = Field(default=None, description="gaussian: how the codebook was trained")
    source: str | None = Field(default=None, description="file: path; e8: construction")
    sha256: str | None = Field(
        default=None,
        description="file: digest of the .npy file's bytes; gaussian: of STEM.npy's (checked when read)",
    )


def codebook_dir() -> Path:
    """The cache folder of codebooks (created if absent)."""
    from gmse_cli.paths import cache_dir

    path = cache_dir() / "codebooks"
    path.mkdir(parents=True, exist_ok=True)
    sweep_cache_folder(path)  # temporary files killed writers left
    return path


def shipped_dir() -> Path:
    """The codebooks shipped with the package (read-only; :mod:`gmse_cli.compress.vq.shipped`)."""
    return Path(__file__).resolve().parent / "shipped-codebooks"


def save_codebook(
    stem: str, cb: np.ndarray | None, info: CodebookInfo, directory: Path | None = None
) -> CodebookInfo:
    """Write ``STEM.npy`` (unless ``cb`` is None) and ``STEM.json``, each atomically, into
    ``directory`` (default the cache); the record written (and returned) carries the digest of
    the array's bytes. The array goes first: a kill between the two leaves a record whose
    digest names other bytes, read as a miss."""
    directory = codebook_dir() if directory is None else directory
    path = directory / f"{stem}.npy"
    try:
        if cb is not None:
            buffer = io.BytesIO()
            np.save(buffer, cb, allow_pickle=False)
            data = buffer.getvalue()
            info = info.model_copy(update={"sha256": hashlib.sha256(data).hexdigest()})
            # The umask's mode (write_atomic), as every file uscl makes (forced 0644, a group's
            # cache under umask 002 was not group-writable, a private one under 077 was
            # world-readable). Two processes computing the same codebook both leave a complete one.
            write_atomic(path, data)
        path = directory / f"{stem}.json"
        write_atomic(path, info.model_dump_json(indent=2).encode())
    except OSError as exc:  # one line naming the file ('a write failed' named none)
        # space is the fix only for a full disk; a folder in the way or a read-only cache is not
        space = "free some space, or " if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
        raise CacheError(f"cannot write codebook cache '{path}': {(exc.strerror or str(exc)).lower()} "
                         f"({space}set USCL_CACHE_DIR to another folder)") from None
    return info


def load_codebook(
    stem: str, with_array: bool, directory: Path | None = None
) -> tuple[np.ndarray | None, CodebookInfo] | None:
    """``(codewords or None, info)`` of a cached entry (in ``directory``, default the cache);
    None when absent or damaged (a damaged array, one whose bytes miss the record's digest,
    also gives one note on stderr)."""
    in_cache = directory is None
    directory = codebook_dir() if directory is None else directory
    npy = directory / f"{stem}.npy"
    try:
        info = CodebookInfo.model_validate_json(read_cache_bytes(directory / f"{stem}.json"))
        raw = read_cache_bytes(npy) if with_array else None
    except (OSError, ValueError):
        return None  # absent or damaged: recompute
    if raw is None:
        return None, info
    digest = hashlib.sha256(raw).hexdigest()
    if info.kind != "file" and info.sha256 is not None and info.sha256 != digest:
        note(f"codebook cache '{npy}' is damaged (its SHA-256 is not its record's): computing it again")
        return None
    try:
        cb = np.load(io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(cb, np.ndarray) or cb.dtype != np.float32 or cb.shape != (info.codewords, info.dim):
        return None
    if info.sha256 is None and in_cache and info.kind != "file":
        info = _stamped(directory / f"{stem}.json", info, digest)
    return cb, info


def _note_unkept(exc: CacheError) -> None:
    """Say once per process that codebooks are not kept (the cache cannot be used): the command
    answers with the codebook it holds in memory, as every other cache degrades to no cache
    (:func:`~gmse_cli.messages.cache_note`: no second note where numba's cache failed too)."""
    cache_note(f"{exc}; codebooks are computed again on each run until then")


def clear_unkept_note() -> None:
    """Let the next cache failure say so again (:func:`~gmse_cli.compress.vq.codebooks.clear_caches`)."""
    clear_cache_note()


def cached_codebook(stem: str, with_array: bool) -> tuple[np.ndarray | None, CodebookInfo] | None:
    """:func:`load_codebook` from the cache; a miss (and one note) where there is no usable cache
    folder (no home folder, a file in the way, a read-only medium)."""
    try:
        return load_codebook(stem, with_array=with_array)
    except CacheError as exc:
        _note_unkept(exc)
        return None


def keep_codebook(stem: str, cb: np.ndarray | None, info: CodebookInfo) -> CodebookInfo:
    """:func:`save_codebook` into the cache; where that fails (a read-only cache, a full disk),
    one note and ``info`` as it is: the work is not thrown away for want of a cache."""
    try:
        return save_codebook(stem, cb, info)
    except CacheError as exc:
        _note_unkept(exc)
        return info


def _stamped(path: Path, info: CodebookInfo, digest: str) -> CodebookInfo:
    """A record written before records carried digests, rewritten with ``digest`` (module
    docstring); a cache that cannot be written keeps the old record."""
    info = info.model_copy(update={"sha256": digest})
    try:
        write_atomic(path, info.model_dump_json(indent=2).encode())
    except OSError:
        pass
    return info
