"""Training data: corpora, tokenizers, a token cache on disk, and deterministic batches.

Sources
  - ``c4``: allenai/c4 'en' streamed with ``datasets``; its own validation split is held out.
    Only as many documents as the budget needs are tokenized (the stream order is fixed, so a
    larger cache's prefix equals a smaller one and is reused).
  - a local file or folder: plain text, ``.xz``/``.gz``/``.bz2`` compressed text, JSON lines
    (``.jsonl``/``.json``, optionally compressed; the ``text_field`` of each object), parquet.
    The last ``val_fraction`` of the characters (cut at a line boundary) is the validation
    split; training never reads it, and a ``bpe:V`` tokenizer is trained on the rest only.

Tokenizers: a hub id (transformers), a local ``tokenizer.json`` (tokenizers), or ``bpe:V`` --
a byte-level BPE trained on the training text and cached by content hash.

Tokens are written once to ``<cache>/tokens/<key>/{train,val}.bin`` (uint16 when the
vocabulary fits, else uint32) and memory-mapped afterwards. :class:`TokenWindows` turns the
training tokens into batches that depend only on (seed, batch index): the data position of a
run is its step count, which makes resuming exact.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gmse_cli.errors import BackendMissing, DataError
from gmse_cli.paths import cache_dir

__all__ = [
    "TokenizerHandle",
    "TokenData",
    "TokenWindows",
    "load_tokenizer",
    "train_bpe",
    "iter_corpus",
    "corpus_files",
    "prepare_tokens",
    "EOS_TOKEN",
]

EOS_TOKEN = "<|endoftext|>"
_TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".tex", ".html", ".htm", ".csv", ".tsv", ".py", ""}
_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_COMPRESSED = {".xz": lzma.open, ".lzma": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}
_CHUNK_CHARS = 1 << 20  # text is read and tokenized in ~1M-character pieces cut at newlines
_CACHE_VERSION = "1"


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


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
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data path '{source}' does not exist; give a text/JSONL/parquet file or folder, or 'c4'"
        )
    if path.is_file():
        return [path]
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
                    pieces = list(_text_pieces(handle)) or [""]
                    for i, piece in enumerate(pieces):
                        yield piece, i == len(pieces) - 1
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
        raise DataError(f"{path}:{number}: no string field '{field}' (set data.text_field)")
    return obj[field]


def _parquet_docs(path: Path, field: str) -> Iterator[tuple[str, bool]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BackendMissing("reading parquet needs pyarrow: pip install pyarrow") from None
    table = pq.ParquetFile(path)
    if field not in table.schema_arrow.names:
        raise DataError(f"{path}: no column '{field}' (columns: {', '.join(table.schema_arrow.names)})")
    for batch in table.iter_batches(columns=[field]):
        for text in batch.column(0).to_pylist():
            if text:
                yield str(text), True


def _split_corpus(
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


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerHandle:
    """A tokenizer reduced to what training needs."""

    source: str
    sha256: str
    vocab_size: int
    eos_id: int | None
    encode_batch: Callable[[list[str]], list[list[int]]]
    decode: Callable[[list[int]], str]


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise BackendMissing("training needs the [train] extra: pip install 'uscl[train]'") from None
    return tokenizers


def train_bpe(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE (GPT-2 style, with one ``<|endoftext|>`` special token) trained on ``texts``."""
    tk = _require_tokenizers()
    if vocab_size <= 257:
        raise DataError(f"vocab size {vocab_size} must exceed 257 (256 bytes + <|endoftext|>)")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _handle_from_tokenizers(tokenizer: Any, source: str) -> TokenizerHandle:
    blob = tokenizer.to_str()
    eos = tokenizer.token_to_id(EOS_TOKEN)
    if eos is None:
        eos = tokenizer.token_to_id("</s>")

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    return TokenizerHandle(
        source=source,
        sha256=hashlib.sha256(blob.encode()).hexdigest(),
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        eos_id=eos,
        encode_batch=encode_batch,
        decode=tokenizer.decode,
    )


def load_tokenizer(spec: str, *, train_texts: Callable[[], Iterable[str]] | None = None,
                   corpus_tag: str | None = None) -> TokenizerHandle:
    """Resolve a tokenizer spec: ``bpe:V``, a local tokenizer.json, or a hub id."""
    tk = _require_tokenizers()
    if spec.startswith("bpe:"):
        if train_texts is None or corpus_tag is None:
            raise DataError(f"tokenizer '{spec}' trains on a local corpus; give a tokenizer for 'c4'")
        vocab = int(spec[4:])
        folder = cache_dir() / "tokenizers"
        folder.mkdir(parents=True, exist_ok=True)
        cached = folder / f"bpe{vocab}-{corpus_tag}.json"
        if not cached.exists():
            tokenizer = train_bpe(train_texts(), vocab_size=vocab)
            _atomic_write_text(cached, tokenizer.to_str())
        return _handle_from_tokenizers(tk.Tokenizer.from_file(str(cached)), spec)
    path = Path(spec).expanduser()
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise DataError(f"tokenizer file '{spec}' does not exist (train one: uscl tokenizer train)")
        try:
            tokenizer = tk.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise DataError(f"{spec}: not a tokenizers JSON file ({exc})") from None
        return _handle_from_tokenizers(tokenizer, spec)
    return _hub_tokenizer(spec)


def _hub_tokenizer(name: str) -> TokenizerHandle:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BackendMissing("hub tokenizers need transformers: pip install 'uscl[train]'") from None
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # network, gating, missing repo: all end the same way for the user
        raise DataError(
            f"cannot load tokenizer '{name}' from the hub ({type(exc).__name__}); offline, give a "
            "local tokenizer.json or bpe:V (e.g. --tokenizer bpe:8192)"
        ) from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise DataError(f"tokenizer '{name}' has no fast (tokenizers) backend")
    blob = backend.to_str()
    eos = tok.eos_token_id

    def encode_batch(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]

    return TokenizerHandle(
        source=name,
        sha256=hashlib.sha256(blob.encode()).hexdigest(),
        vocab_size=len(tok),
        eos_id=eos,
        encode_batch=encode_batch,
        decode=backend.decode,
    )


# --------------------------------------------------------------------------------------------
# Token cache
# --------------------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _dtype_for(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 1 << 16 else np.dtype(np.uint32)


def _write_tokens(
    pieces: Iterable[tuple[str, bool]],
    tok: TokenizerHandle,
    path: Path,
    *,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Tokenize ``pieces`` into a raw token file; stops once ``limit`` tokens are written."""
    dtype = _dtype_for(tok.vocab_size)
    written = 0
    batch: list[tuple[str, bool]] = []

    def flush(handle: io.BufferedWriter) -> None:
        nonlocal written
        ids = tok.encode_batch([t for t, _ in batch])
        chunks = []
        for (_, end), seq in zip(batch, ids, strict=True):
            chunks.append(np.asarray(seq, dtype=dtype))
            if end and tok.eos_id is not None:
                chunks.append(np.asarray([tok.eos_id], dtype=dtype))
        arr = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
        if limit is not None:
            arr = arr[: max(0, limit - written)]
        handle.write(arr.tobytes())
        written += arr.size
        batch.clear()
        if on_progress is not None:
            on_progress(written)

    with open(path, "wb") as handle:
        for text, end in pieces:
            # Split ~1M-char pieces further at newlines so encode_batch runs in parallel.
            for sub, last in _subpieces(text):
                batch.append((sub, end and last))
            if len(batch) >= 64:
                flush(handle)
                if limit is not None and written >= limit:
                    break
        if batch and (limit is None or written < limit):
            flush(handle)
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


def prepare_tokens(
    source: str,
    tokenizer: str,
    *,
    val_fraction: float = 0.02,
    text_field: str = "text",
    min_train_tokens: int = 0,
    min_val_tokens: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TokenData:
    """Tokenize once into the cache (or reuse it) and return the memory-mapped splits."""
    if source.strip().lower() == "c4":
        return _prepare_c4(tokenizer, min_train_tokens, min_val_tokens, progress)
    train_stream, val_stream, corpus_sha = _split_corpus(
        source, text_field=text_field, val_fraction=val_fraction
    )
    # A trained BPE depends on the training split only: the corpus and where it is cut.
    tag = hashlib.sha256(f"{corpus_sha}|{val_fraction!r}|{text_field}".encode()).hexdigest()[:16]
    tok = load_tokenizer(tokenizer, train_texts=lambda: (t for t, _ in train_stream()), corpus_tag=tag)
    key = hashlib.sha256(
        f"{_CACHE_VERSION}|{corpus_sha}|{tok.sha256}|{val_fraction!r}|{text_field}".encode()
    ).hexdigest()[:24]
    folder = cache_dir() / "tokens" / key
    if not (folder / "meta.json").exists():
        if progress:
            progress(f"tokenizing {source} with {tokenizer} (once; cached in {folder})")
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=_mkdir(folder.parent)))
        try:
            n_train = _write_tokens(train_stream(), tok, staging / "train.bin")
            n_val = _write_tokens(val_stream(), tok, staging / "val.bin")
            meta = {
                "version": _CACHE_VERSION,
                "source": str(source),
                "data_sha256": corpus_sha,
                "tokenizer": tokenizer,
                "tokenizer_sha256": tok.sha256,
                "vocab_size": tok.vocab_size,
                "dtype": _dtype_for(tok.vocab_size).name,
                "train_tokens": n_train,
                "val_tokens": n_val,
                "val_fraction": val_fraction,
            }
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
            _publish(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    data = TokenData(folder=folder, source=str(source), data_sha256=corpus_sha, tokenizer=tok,
                     val_fraction=val_fraction)
    _check_sizes(data, min_train_tokens, min_val_tokens)
    return data


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(staging: Path, folder: Path) -> None:
    """Move a finished cache entry into place; a concurrent writer that won keeps its copy."""
    try:
        os.replace(staging, folder)
    except OSError:
        if not (folder / "meta.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)


def _check_sizes(data: TokenData, min_train: int, min_val: int) -> None:
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


def _prepare_c4(
    tokenizer: str, min_train: int, min_val: int, progress: Callable[[str], None] | None
) -> TokenData:
    """Stream allenai/c4 'en' and tokenize the prefix the budget needs (with 5% spare)."""
    if tokenizer.startswith("bpe:"):
        raise DataError("tokenizer bpe:V trains on a local corpus; for c4 give a hub id or tokenizer.json")
    try:
        import datasets
    except ImportError:
        raise BackendMissing("C4 streaming needs datasets: pip install 'uscl[train]'") from None
    tok = load_tokenizer(tokenizer)
    root = _mkdir(cache_dir() / "tokens")
    key = hashlib.sha256(f"{_CACHE_VERSION}|c4-en|{tok.sha256}".encode()).hexdigest()[:24]
    folder = root / f"c4-{key}"
    want_train = int(min_train * 1.05) + 1
    want_val = max(min_val, 1)
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        if meta["train_tokens"] >= want_train and meta["val_tokens"] >= want_val:
            return _c4_data(folder, meta, tok)
    if progress:
        progress(f"streaming allenai/c4 'en' and tokenizing {want_train:,} training tokens (cached in {folder})")

    def docs(split: str) -> Iterator[tuple[str, bool]]:
        try:
            stream = datasets.load_dataset("allenai/c4", "en", split=split, streaming=True)
            for row in stream:
                yield row["text"], True
        except Exception as exc:  # network and hub failures
            raise DataError(f"cannot stream allenai/c4 ({type(exc).__name__}: {exc}); offline, give --data PATH") from None

    staging = Path(tempfile.mkdtemp(prefix=f".c4-{key}.", dir=root))
    try:
        n_train = _write_tokens(docs("train"), tok, staging / "train.bin", limit=want_train)
        n_val = _write_tokens(docs("validation"), tok, staging / "val.bin", limit=want_val)
        digest = hashlib.sha256()
        with open(staging / "train.bin", "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        meta = {
            "version": _CACHE_VERSION,
            "source": "c4",
            "data_sha256": digest.hexdigest(),
            "tokenizer": tokenizer,
            "tokenizer_sha256": tok.sha256,
            "vocab_size": tok.vocab_size,
            "dtype": _dtype_for(tok.vocab_size).name,
            "train_tokens": n_train,
            "val_tokens": n_val,
            "val_fraction": None,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _c4_data(folder, json.loads((folder / "meta.json").read_text()), tok)


def _c4_data(folder: Path, meta: dict[str, Any], tok: TokenizerHandle) -> TokenData:
    return TokenData(folder=folder, source="c4", data_sha256=meta["data_sha256"], tokenizer=tok,
                     val_fraction=None)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class TokenWindows:
    """Non-overlapping windows of ``context + 1`` tokens, shuffled per epoch by (seed, epoch).

    Sample ``i`` (counting over the whole run, all ranks) is window ``perm_e[i mod W]`` of epoch
    ``e = i // W``: a batch depends only on its index, never on what was drawn before.
    """

    def __init__(self, tokens: np.ndarray, *, context: int, seed: int) -> None:
        self.tokens = tokens
        self.context = context
        self.seed = seed
        self.windows = (len(tokens) - 1) // context
        if self.windows < 1:
            raise DataError(f"{len(tokens):,} tokens cannot fill one window of {context + 1}")
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(self.windows))
        return self._perm[1]

    def samples(self, start: int, count: int) -> np.ndarray:
        """Samples ``start .. start + count - 1`` as an int64 array (count, context + 1)."""
        out = np.empty((count, self.context + 1), dtype=np.int64)
        for row, i in enumerate(range(start, start + count)):
            epoch, j = divmod(i, self.windows)
            w = int(self._permutation(epoch)[j])
            out[row] = self.tokens[w * self.context : w * self.context + self.context + 1]
        return out


def eval_windows(tokens: np.ndarray, *, context: int, max_tokens: int) -> np.ndarray:
    """The first held-out windows covering up to ``max_tokens`` predicted tokens (fixed, in order)."""
    count = min((len(tokens) - 1) // context, max(1, max_tokens // context))
    if count < 1:
        raise DataError(f"the validation split ({len(tokens):,} tokens) is shorter than one context")
    out = np.empty((count, context + 1), dtype=np.int64)
    for row in range(count):
        out[row] = tokens[row * context : row * context + context + 1]
    return out
