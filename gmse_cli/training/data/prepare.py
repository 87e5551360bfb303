"""Entry points for data: tokenize a source once into the cache (or reuse it) for training;
the first tokens of a source, uncached, for measuring a model's activations.

A local corpus's last ``val_fraction`` of the characters (cut at a line boundary) is the
validation split; training never reads it, and a ``bpe:V`` tokenizer is trained on the rest
only. ``c4`` streams (:mod:`.c4`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import numpy as np

from gmse_cli.errors import DataError
from gmse_cli.training.data.c4 import c4_documents, prepare_c4
from gmse_cli.training.data.cache import (
    CACHE_VERSION,
    TokenData,
    check_sizes,
    encode_pieces,
    entry_folder,
    read_entry_meta,
    write_entry,
)
from gmse_cli.training.data.corpus import iter_corpus, split_corpus
from gmse_cli.training.data.tokenizer import TokenizerHandle, load_tokenizer

__all__ = ["prepare_tokens", "first_tokens"]

Stream = Callable[[], Iterator[tuple[str, bool]]]


def _corpus_tokenizer(
    source: str, tokenizer: str, *, val_fraction: float, text_field: str
) -> tuple[TokenizerHandle, Stream, Stream, str]:
    """The tokenizer of a local corpus, the corpus's (train, val) streams and its hash."""
    train_stream, val_stream, corpus_sha = split_corpus(source, text_field=text_field, val_fraction=val_fraction)
    # A trained BPE depends on the training split only: the corpus and where it is cut.
    tag = hashlib.sha256(f"{corpus_sha}|{val_fraction!r}|{text_field}".encode()).hexdigest()[:16]
    tok = load_tokenizer(tokenizer, train_texts=lambda: (t for t, _ in train_stream()), corpus_tag=tag)
    return tok, train_stream, val_stream, corpus_sha


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
        return prepare_c4(tokenizer, min_train_tokens, min_val_tokens, progress)
    tok, train_stream, val_stream, corpus_sha = _corpus_tokenizer(
        source, tokenizer, val_fraction=val_fraction, text_field=text_field
    )
    key = hashlib.sha256(
        f"{CACHE_VERSION}|{corpus_sha}|{tok.sha256}|{val_fraction!r}|{text_field}".encode()
    ).hexdigest()[:24]
    folder = entry_folder(key)
    if read_entry_meta(folder, tok.vocab_size) is None:
        if progress:
            progress(f"tokenizing {source} with {tokenizer} (once; cached in {folder})")
        write_entry(folder, train=train_stream(), val=val_stream(), tok=tok, tokenizer=tokenizer,
                    source=str(source), data_sha256=corpus_sha, val_fraction=val_fraction)  # a damaged entry is replaced
    data = TokenData(folder=folder, source=str(source), data_sha256=corpus_sha, tokenizer=tok,
                     val_fraction=val_fraction)
    check_sizes(data, min_train_tokens, min_val_tokens)
    return data


def first_tokens(
    source: str,
    tokenizer: str,
    *,
    count: int,
    val_fraction: float = 0.02,
    text_field: str = "text",
) -> tuple[np.ndarray, TokenizerHandle]:
    """The first ``count`` tokens of ``source`` (int64; fewer when the text is shorter), EOS
    after each document as in training, and the tokenizer; nothing is cached.

    ``c4`` reads the start of its validation split (streamed: needs the network). A ``bpe:V``
    tokenizer is the one a training run on ``source`` with ``val_fraction`` and ``text_field``
    trained (reproduced from its cache, or trained again on the same split).
    """
    if count < 1:
        raise DataError(f"token count {count} must be at least 1")
    if source.strip().lower() == "c4":
        if tokenizer.startswith("bpe:"):
            raise DataError("tokenizer bpe:V trains on a local corpus; for c4 give a tokenizer.json or a model folder")
        tok, pieces = load_tokenizer(tokenizer), c4_documents("validation")
    else:
        if tokenizer.startswith("bpe:"):
            tok = _corpus_tokenizer(source, tokenizer, val_fraction=val_fraction, text_field=text_field)[0]
        else:
            tok = load_tokenizer(tokenizer)
        pieces = iter_corpus(source, text_field=text_field)
    parts: list[np.ndarray] = []
    have = 0
    for ids in encode_pieces(pieces, tok):
        parts.append(ids[: count - have].astype(np.int64))
        have += len(parts[-1])
        if have >= count:
            break
    if have == 0:
        raise DataError(f"data source '{source}' holds no text")
    return np.concatenate(parts), tok
