"""A VQ stage's codebook, its record and its search structure, each computed once.

Codebooks (``(K, dim)`` float32, ``K = 2^(bits * dim)``, coordinates in units of the input's
standard deviation):

- ``gaussian``: Lloyd on Gaussian samples (:mod:`gmse_cli.compress.vq.gaussian`), scale
  constant 1;
- ``e8``: QuIP#'s E8P (:mod:`gmse_cli.compress.vq.e8p`), with an MSE-optimal scale constant
  found by Monte Carlo (:mod:`gmse_cli.compress.vq.measure`);
- a ``.npy`` file of shape ``(2^(bits * dim), dim)``, with its constant found the same way.

Records (:class:`~gmse_cli.compress.vq.store.CodebookInfo`) are cached on disk
(:mod:`gmse_cli.compress.vq.store`); a file's record is keyed by the digest of its bytes.
"""

from __future__ import annotations

import hashlib
import io
from functools import cache
from typing import NamedTuple

import numpy as np

from gmse_cli.compress.vq.e8p import e8p_codebook
from gmse_cli.compress.vq.gaussian import gaussian_codebook
from gmse_cli.compress.vq.measure import heldout_mse, optimal_constant
from gmse_cli.compress.vq.search import Searcher, build_searcher
from gmse_cli.compress.vq.store import (
    ALGORITHM_VERSION,
    LLOYD_SEED,
    CodebookInfo,
    cached_codebook,
    clear_unkept_note,
    keep_codebook,
)
from gmse_cli.errors import DataError, SpecError
from gmse_cli.inputs import MAX_CODEBOOK_BYTES, read_binary_file, user_path
from gmse_cli.limits import keep_bounded
from gmse_cli.progress import once
from gmse_cli.spec import VQ

__all__ = [
    "codebook",
    "codebook_info",
    "codebook_and_info",
    "scale_constant",
    "stage_searcher",
    "clear_caches",
]


def _index_bits(stage: VQ) -> int:
    return round(stage.bits * stage.dim)


@cache
def _e8p_info() -> CodebookInfo:
    stem = f"e8p-v{ALGORITHM_VERSION}"
    hit = cached_codebook(stem, with_array=False)
    if hit is not None:
        return hit[1]
    cb = e8p_codebook()
    with once("measuring the E8P codebook's scale constant"):
        constant, _ = optimal_constant(cb, e8p=True, seed=LLOYD_SEED)
        held, held_n = heldout_mse(cb, constant, seed=LLOYD_SEED + 1, e8p=True)
    info = CodebookInfo(
        kind="e8",
        dim=8,
        index_bits=16,
        codewords=65536,
        scale_constant=constant,
        mse=held,
        mse_samples=held_n,
        source="QuIP# E8P: 256 absolute patterns of D8 + 1/2, even sign flips, +-1/4 shift",
    )
    return keep_codebook(stem, None, info)


class _FileBook(NamedTuple):
    codewords: np.ndarray
    path: str
    digest: str
    dim: int
    index_bits: int


# (resolved path, mtime_ns, size, dim, index bits) -> loaded file; digest -> its info
_file_memo: dict[tuple[str, int, int, int, int], _FileBook] = {}
_file_infos: dict[tuple[str, int, int], CodebookInfo] = {}
_FILE_BOOKS = 64
"""Codebooks (and their searchers) held at most: a file's is up to its size limit, and a program
that writes a new codebook file per call (a service, a sweep) kept every one of them."""


def _file_book(path: str, dim: int, index_bits: int) -> _FileBook:
    p = user_path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size, dim, index_bits)
    except OSError as exc:
        raise DataError(f"vq: cannot read codebook file {p}: {exc.strerror or exc}") from None
    if key in _file_memo:  # unchanged since read: skip re-reading and re-hashing
        return _file_memo[key]
    # a regular file only: a FIFO named cb.npy was read until a writer came (a hang)
    raw = read_binary_file(p, what="codebook file", error=DataError, limit=MAX_CODEBOOK_BYTES)
    _check_npy_header(raw, p, dim, index_bits)  # np.load's array has the header's shape
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"vq: {p} is not a .npy array file ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise DataError(f"vq: codebook {p} holds {arr.dtype}, not numbers")
    cb = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(cb).all():
        raise DataError(f"vq: codebook {p} holds non-finite values")
    if dim == 1:
        cb = np.sort(cb, axis=0)  # the 1-D search wants ascending levels
        if np.any(np.diff(cb[:, 0]) <= 0):
            raise DataError(f"vq: codebook {p} repeats a value")
    elif len(np.unique(cb, axis=0)) != len(cb):
        raise DataError(f"vq: codebook {p} repeats a codeword")
    cb.setflags(write=False)
    book = _FileBook(cb, str(p), hashlib.sha256(raw).hexdigest(), dim, index_bits)
    keep_bounded(_file_memo, key, book, _FILE_BOOKS)
    return book


def _check_npy_header(raw: bytes, p: object, dim: int, index_bits: int) -> None:
    """Refuse a .npy whose header shape is not (2^index_bits, dim) before numpy allocates it: np.load sizes
    its array from the header, so a 1 KiB file claiming (2^40, 2) asked for 16 TiB (a
    MemoryError traceback) and one claiming a few GiB allocated them before failing."""
    from numpy.lib import format as npy

    buf = io.BytesIO(raw)
    try:
        version = npy.read_magic(buf)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, _ = read(buf)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"vq: {p} is not a .npy array file ({exc})") from None
    want = (2**index_bits, dim)
    if tuple(shape) != want:
        raise SpecError(
            f"vq: codebook {p} has shape {tuple(shape)}, but dim={dim} and "
            f"bits={index_bits / dim:g} need {want} (2^(bits*dim) rows of dim coordinates)"
        )


def _file_info(book: _FileBook) -> CodebookInfo:
    key = (book.digest, book.dim, book.index_bits)
    if key in _file_infos:
        return _file_infos[key]
    stem = f"file-{book.digest[:32]}-d{book.dim}-b{book.index_bits}-v{ALGORITHM_VERSION}"
    hit = cached_codebook(stem, with_array=False)
    if hit is not None:
        info = hit[1]
    else:
        with once(f"measuring the scale constant of codebook {book.path}"):
            constant, _ = optimal_constant(book.codewords, e8p=False, seed=LLOYD_SEED)
            held, held_n = heldout_mse(book.codewords, constant, seed=LLOYD_SEED + 1, e8p=False)
        info = CodebookInfo(
            kind="file",
            dim=book.dim,
            index_bits=book.index_bits,
            codewords=len(book.codewords),
            scale_constant=constant,
            mse=held,
            mse_samples=held_n,
            source=book.path,
            sha256=book.digest,
        )
        info = keep_codebook(stem, None, info)
    keep_bounded(_file_infos, key, info)
    return info


def codebook(stage: VQ) -> np.ndarray:
    """The codebook of ``stage``: (2^(bits*dim), dim) float32, read-only, computed once."""
    if stage.codebook == "gaussian":
        return gaussian_codebook(stage.dim, _index_bits(stage))[0]
    if stage.codebook == "e8":
        return e8p_codebook()
    return _file_book(stage.codebook, stage.dim, _index_bits(stage)).codewords


def codebook_info(stage: VQ) -> CodebookInfo:
    """How ``stage``'s codebook was made, its scale constant and Gaussian MSE (computed once)."""
    if stage.codebook == "gaussian":
        return gaussian_codebook(stage.dim, _index_bits(stage))[1]
    if stage.codebook == "e8":
        return _e8p_info()
    return _file_info(_file_book(stage.codebook, stage.dim, _index_bits(stage)))


def scale_constant(stage: VQ) -> float:
    """The MSE-optimal ``c`` in ``s = c * RMS`` for unit-variance inputs (1 for Lloyd codebooks)."""
    return codebook_info(stage).scale_constant


def codebook_and_info(stage: VQ) -> tuple[np.ndarray, CodebookInfo]:
    """``(codebook(stage), codebook_info(stage))``."""
    return codebook(stage), codebook_info(stage)


# searchers by codebook identity (the entry keeps the array alive, so ids are not reused)
_searchers: dict[int, tuple[np.ndarray, Searcher]] = {}


def _searcher_of(cb: np.ndarray, *, e8p: bool = False) -> Searcher:
    hit = _searchers.get(id(cb))
    if hit is None or hit[0] is not cb:
        hit = (cb, build_searcher(cb, e8p=e8p))
        keep_bounded(_searchers, id(cb), hit, _FILE_BOOKS)
    return hit[1]


def stage_searcher(stage: VQ) -> Searcher:
    """The search structure of ``stage``'s codebook (built once per codebook)."""
    return _searcher_of(codebook(stage), e8p=stage.codebook == "e8")


def clear_caches() -> None:
    """Forget every codebook held in memory (the disk cache stays)."""
    gaussian_codebook.cache_clear()
    _e8p_info.cache_clear()
    _file_memo.clear()
    _file_infos.clear()
    _searchers.clear()
    clear_unkept_note()
