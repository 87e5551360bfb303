"""Local corpora: plain text, ``.xz``/``.gz``/``.bz2`` compressed text, JSON lines (the
``text_field`` of each object) and parquet, read in a fixed order, and their train/validation
split."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gmse_cli.errors import BackendMissing, DataError
from gmse_cli.inputs import does_not_exist, user_path

__all__ = ["corpus_files", "iter_corpus", "split_corpus"]

_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_COMPRESSED = {".xz": lzma.open, ".lzma": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
_CHUNK_CHARS = 1 << 20  # text is read and tokenized in ~1M-character pieces cut at newlines


def _kind(path: Path) -> tuple[str, Callable[..., Any] | None]:
    """('text' | 'json' | 'parquet', opener) from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    opener = None
    if suffixes and suffixes[-1] in _COMPRESSED:
        opener = _COMPRESSED[suffixes.pop()]
    inner = suffixes[-1] if suffixes else ""
    if inner == ".parquet":
        if opener is not None:
            raise DataError(f"{path}: compressed parquet is not supported (parquet compresses itself)")
        return "parquet", None
    if inner in _JSON_SUFFIXES:
        return "json", opener
    return "text", opener


def corpus_files(source: str | Path) -> list[Path]:
    """The files a local source names, in a fixed order (folders: recursive, sorted, no hidden)."""
    path = user_path(source)
    if not path.exists():
        raise DataError(
            f"data path '{source}' {does_not_exist(source)}; give a text/JSONL/parquet file or folder, or 'c4'"
        )
    if path.is_file():
        return [path]
    if not path.is_dir():  # a FIFO or a device: it may never end
        raise DataError(f"data path '{source}' is not a regular file or folder (a pipe or a device)")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"data folder '{source}' holds no files")
    return files


def _text_pieces(handle: io.TextIOBase) -> Iterator[str]:
    """~1M-character pieces ending at a newline (the last one may not)."""
    buffer: list[str] = []
    size = 0
    for line in handle:
        buffer.append(line)
        size += len(line)
        if size >= _CHUNK_CHARS:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def _text_only(pieces: Iterator[str], path: Path) -> Iterator[str]:
    """The pieces, refusing a NUL character: text never holds one, binary files and UTF-16 do."""
    for piece in pieces:
        if "\x00" in piece:
            raise DataError(f"{path}: holds NUL bytes, so it is binary data or UTF-16, not UTF-8 text")
        yield piece


def _ending_last(pieces: Iterator[str]) -> Iterator[tuple[str, bool]]:
    """(piece, is_last) with one piece of lookahead, never the whole file in memory; an empty
    file is one empty piece."""
    held = next(pieces, "")
    for piece in pieces:
        yield held, False
        held = piece
    yield held, True


def iter_corpus(source: str | Path, *, text_field: str = "text") -> Iterator[tuple[str, bool]]:
    """(text, ends_document) pieces of a local corpus, in order.

    A plain-text file is one document (read in pieces); each JSON line or parquet row is one.
    """
    for path in corpus_files(source):
        kind, opener = _kind(path)
        try:
            if kind == "parquet":
                yield from _parquet_docs(path, text_field)
                continue
            open_text = opener or open
            with open_text(path, "rt", encoding="utf-8", errors="replace") as handle:
                if kind == "text":
                    yield from _ending_last(_text_only(_text_pieces(handle), path))
                else:
                    for number, line in enumerate(handle, start=1):
                        if not line.strip():
                            continue
                        yield _json_text(path, number, line, text_field), True
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None


def _json_text(path: Path, number: int, line: str, field: str) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        raise DataError(f"{path}:{number}: not a JSON line") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
        raise DataError(f"{path}:{number}: no string field '{field}' (choose the field with --text-field, or data.text_field in a sweep file)")
    return obj[field]


def _parquet_docs(path: Path, field: str) -> Iterator[tuple[str, bool]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BackendMissing("reading parquet needs pyarrow: pip install pyarrow") from None
    import pyarrow as pa

    try:
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
        if field not in names:
            raise DataError(f"{path}: no column '{field}' (columns: {', '.join(names)})")
        for batch in table.iter_batches(columns=[field]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield str(text), True
    except (OSError, pa.ArrowException) as exc:  # not parquet, truncated, or a corrupt page
        raise DataError(f"cannot read {path} as parquet: {(str(exc) or repr(exc)).splitlines()[0]}") from None


def split_corpus(
    source: str, *, text_field: str, val_fraction: float
) -> tuple[Callable[[], Iterator[tuple[str, bool]]], Callable[[], Iterator[tuple[str, bool]]], str]:
    """Two re-iterable streams (train, val) and the corpus content hash.

    The split point is the first newline after (1 - val_fraction) of all characters, so it is
    the same for every tokenizer.
    """
    digest = hashlib.sha256()
    total = 0
    for text, end in iter_corpus(source, text_field=text_field):
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\x00" if end else b"")
        total += len(text)
    if total == 0:
        raise DataError(f"data source '{source}' holds no text")
    cut = int(total * (1.0 - val_fraction))

    def stream(train: bool) -> Iterator[tuple[str, bool]]:
        seen = 0
        for text, end in iter_corpus(source, text_field=text_field):
            start, stop = seen, seen + len(text)
            seen = stop
            if stop <= cut:
                if train:
                    yield text, end
                continue
            if start >= cut:
                if not train:
                    yield text, end
                continue
            # The piece straddles the cut: split after the next newline.
            local = cut - start
            newline = text.find("\n", local)
            split = len(text) if newline < 0 else newline + 1
            head, tail = text[:split], text[split:]
            if train:
                yield head, end and not tail
            elif tail:
                yield tail, end

    return (lambda: stream(True)), (lambda: stream(False)), digest.hexdigest()
