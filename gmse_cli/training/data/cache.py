"""The token cache: tokens written once to ``<cache>/tokens/<key>/{train,val}.bin`` (uint16
when the vocabulary fits, else uint32) with a ``meta.json``, and memory-mapped afterwards.

An entry is built in a staging folder beside its final place and moved there whole, so a
reader sees a complete entry or none.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gmse_cli.atomic import staging_folder
from gmse_cli.cleanup import remove_stale_folders
from gmse_cli.errors import DataError
from gmse_cli.paths import cache_dir
from gmse_cli.training.data.tokenizer import TokenizerHandle

__all__ = ["CACHE_VERSION", "TokenData", "check_sizes", "encode_pieces", "entry_folder", "read_entry_meta", "write_entry"]

CACHE_VERSION = "2"  # part of every entry's key: a change of the file layout or encoding starts afresh
# (2: a special token's text in the corpus is encoded as text, no longer as its special id)


_LEFT_BY_A_KILL = re.compile(r"\.[^/]+\.([a-z0-9_]{8}|old-\d+-[0-9a-f]{32})")
"""A staging folder (:func:`write_entry`) or an entry set aside (:func:`_publish`): a writer
SIGKILLed while tokenizing (gigabytes for C4) left it for ever; one an hour old is removed."""


def entry_folder(key: str) -> Path:
    """Where the cache entry ``key`` lives (it may not exist yet)."""
    return cache_dir() / "tokens" / key


def read_entry_meta(folder: Path, vocab_size: int | None = None) -> dict[str, Any] | None:
    """The ``meta.json`` of a whole entry, or None when it is absent or damaged (meta.json not
    this version's, or a token file whose size disagrees with it): tokenize again, as the GMSE
    cache recomputes a damaged entry, rather than train on a truncated file. ``vocab_size``: the
    tokenizer's, which the entry must record (its ids are checked against the recorded one)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        # the dtypes write_entry writes: a meta.json saying int16 or float32 let ids of -1 or
        # 0.5 pass the check below (it bounds the largest id only), as one claiming a larger
        # vocabulary than the tokenizer's let ids no embedding has
        if meta["dtype"] not in ("uint16", "uint32") or (vocab_size is not None and meta["vocab_size"] != vocab_size):
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        whole = meta["version"] == CACHE_VERSION and all(
            isinstance(meta[f"{split}_tokens"], int)
            and (folder / f"{split}.bin").stat().st_size == meta[f"{split}_tokens"] * itemsize
            and _ids_below(folder / f"{split}.bin", meta["dtype"], meta["vocab_size"])
            for split in ("train", "val")
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return meta if whole else None


def _ids_below(path: Path, dtype: str, vocab: int) -> bool:
    """Every id in the token file is below ``vocab`` (an overwritten file of the right size
    holds ids no embedding has: an IndexError mid-run, a device assert on a GPU). Read in
    blocks of 64M ids: about 0.02 s per 100M tokens once the file is in the page cache."""
    tokens = np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
    block = 1 << 26
    return all(int(tokens[i : i + block].max()) < vocab for i in range(0, len(tokens), block))


def _dtype_for(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 1 << 16 else np.dtype(np.uint32)


def encode_pieces(pieces: Iterable[tuple[str, bool]], tok: TokenizerHandle) -> Iterator[np.ndarray]:
    """Token ids of ``(text, ends_document)`` pieces in order, the EOS id after each document,
    as arrays of the cache's dtype (one per ~64 sub-pieces, encoded together in parallel)."""
    dtype = _dtype_for(tok.vocab_size)
    batch: list[tuple[str, bool]] = []

    def encoded() -> np.ndarray:
        ids = tok.encode_batch([t for t, _ in batch])
        chunks = []
        for (_, end), seq in zip(batch, ids, strict=True):
            chunks.append(np.asarray(seq, dtype=dtype))
            if end and tok.eos_id is not None:
                chunks.append(np.asarray([tok.eos_id], dtype=dtype))
        batch.clear()
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype)

    for text, end in pieces:
        # Split ~1M-char pieces further at newlines so encode_batch runs in parallel.
        for sub, last in _subpieces(text):
            batch.append((sub, end and last))
        if len(batch) >= 64:
            yield encoded()
    if batch:
        yield encoded()


def _write_tokens(
    pieces: Iterable[tuple[str, bool]],
    tok: TokenizerHandle,
    path: Path,
    *,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Tokenize ``pieces`` into a raw token file; stops once ``limit`` tokens are written."""
    written = 0
    with open(path, "wb") as handle:
        for arr in encode_pieces(pieces, tok):
            if limit is not None:
                arr = arr[: max(0, limit - written)]
            handle.write(arr.tobytes())
            written += arr.size
            if on_progress is not None:
                on_progress(written)
            if limit is not None and written >= limit:
                break
        handle.flush()
        os.fsync(handle.fileno())
    return written


def _subpieces(text: str, size: int = 1 << 16) -> Iterator[tuple[str, bool]]:
    start = 0
    while start < len(text):
        stop = min(len(text), start + size)
        if stop < len(text):
            nl = text.find("\n", stop)
            stop = len(text) if nl < 0 else nl + 1
        yield text[start:stop], stop >= len(text)
        start = stop
    if not text:
        yield "", True


@dataclass(frozen=True)
class TokenData:
    """Memory-mapped training and validation tokens plus the identities a run records."""

    folder: Path
    source: str
    data_sha256: str
    tokenizer: TokenizerHandle
    val_fraction: float | None

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "meta.json").read_text())

    @cached_property
    def train(self) -> np.ndarray:
        return np.memmap(self.folder / "train.bin", dtype=self.meta["dtype"], mode="r")

    @cached_property
    def val(self) -> np.ndarray:
        return np.memmap(self.folder / "val.bin", dtype=self.meta["dtype"], mode="r")


def write_entry(
    folder: Path,
    *,
    train: Iterable[tuple[str, bool]],
    val: Iterable[tuple[str, bool]],
    tok: TokenizerHandle,
    tokenizer: str,
    source: str,
    data_sha256: str | None,
    val_fraction: float | None,
    train_limit: int | None = None,
    val_limit: int | None = None,
) -> None:
    """Tokenize the ``train`` and ``val`` pieces (up to the limits) into the entry ``folder``.

    ``data_sha256=None`` records the hash of the training tokens written (a streamed source has
    no file of its own to hash). An entry already in place is replaced when it is damaged or
    shorter (a shorter prefix of a stream); a whole one at least as long (a concurrent writer's
    that finished first) is kept.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(folder.parent, _LEFT_BY_A_KILL)
    staging = staging_folder(folder.parent, prefix=f".{folder.name}.")
    try:
        n_train = _write_tokens(train, tok, staging / "train.bin", limit=train_limit)
        n_val = _write_tokens(val, tok, staging / "val.bin", limit=val_limit)
        if data_sha256 is None:
            data_sha256 = _file_sha256(staging / "train.bin")
        meta = {
            "version": CACHE_VERSION,
            "source": source,
            "data_sha256": data_sha256,
            "tokenizer": tokenizer,
            "tokenizer_sha256": tok.sha256,
            "vocab_size": tok.vocab_size,
            "dtype": _dtype_for(tok.vocab_size).name,
            "train_tokens": n_train,
            "val_tokens": n_val,
            "val_fraction": val_fraction,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        _publish(staging, folder, tok.vocab_size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        # a full disk: one line naming the cache, not a traceback
        raise DataError(f"cannot write token cache {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _publish(staging: Path, folder: Path, vocab_size: int) -> None:
    """Move a finished cache entry into place, keeping a whole entry at least as long that a
    concurrent writer published first (the same tokens: the key names the corpus, tokenizer and
    split; a stream's longer prefix starts with them). A damaged or shorter entry is renamed aside before it is deleted, never
    deleted in place: two processes repairing one entry at once cannot delete each other's
    files, and a process reading a whole entry never sees it vanish."""
    ours = read_entry_meta(staging, vocab_size)
    for _ in range(16):  # other writers may keep moving entries in; each round one of us wins
        try:
            os.replace(staging, folder)  # succeeds where nothing (or an empty folder) is in place
            return
        except OSError:
            pass
        theirs = read_entry_meta(folder, vocab_size)
        if theirs is not None and ours is not None and all(
            theirs[f"{split}_tokens"] >= ours[f"{split}_tokens"] for split in ("train", "val")
        ):
            return
        aside = folder.with_name(f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            os.rename(folder, aside)
        except FileNotFoundError:  # another writer moved it first
            continue
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(staging, folder)  # still failing (not a race): its own error


def check_sizes(data: TokenData, min_train: int, min_val: int) -> None:
    """Refuse an entry too small for the run: at least ``min_*`` (and 2) tokens per split."""
    meta = data.meta
    if meta["train_tokens"] < max(min_train, 2):
        raise DataError(
            f"data '{data.source}' has {meta['train_tokens']:,} training tokens; a run needs at least "
            f"{max(min_train, 2):,}"
        )
    if meta["val_tokens"] < max(min_val, 2):
        raise DataError(
            f"data '{data.source}' holds out {meta['val_tokens']:,} validation tokens; at least "
            f"{max(min_val, 2):,} are needed (raise data.val_fraction or use more text)"
        )
