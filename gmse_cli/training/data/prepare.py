"""One entry point for training data: tokenize a source once into the cache (or reuse it).

A local corpus's last ``val_fraction`` of the characters (cut at a line boundary) is the
validation split; training never reads it, and a ``bpe:V`` tokenizer is trained on the rest
only. ``c4`` streams (:mod:`.c4`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gmse_cli.training.data.c4 import prepare_c4
from gmse_cli.training.data.cache import (
    CACHE_VERSION,
    TokenData,
    check_sizes,
    entry_folder,
    write_entry,
)
from gmse_cli.training.data.corpus import split_corpus
from gmse_cli.training.data.tokenizer import load_tokenizer

__all__ = ["prepare_tokens"]


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
    train_stream, val_stream, corpus_sha = split_corpus(
        source, text_field=text_field, val_fraction=val_fraction
    )
    # A trained BPE depends on the training split only: the corpus and where it is cut.
    tag = hashlib.sha256(f"{corpus_sha}|{val_fraction!r}|{text_field}".encode()).hexdigest()[:16]
    tok = load_tokenizer(tokenizer, train_texts=lambda: (t for t, _ in train_stream()), corpus_tag=tag)
    key = hashlib.sha256(
        f"{CACHE_VERSION}|{corpus_sha}|{tok.sha256}|{val_fraction!r}|{text_field}".encode()
    ).hexdigest()[:24]
    folder = entry_folder(key)
    if not (folder / "meta.json").exists():
        if progress:
            progress(f"tokenizing {source} with {tokenizer} (once; cached in {folder})")
        write_entry(folder, train=train_stream(), val=val_stream(), tok=tok, tokenizer=tokenizer,
                    source=str(source), data_sha256=corpus_sha, val_fraction=val_fraction)
    data = TokenData(folder=folder, source=str(source), data_sha256=corpus_sha, tokenizer=tok,
                     val_fraction=val_fraction)
    check_sizes(data, min_train_tokens, min_val_tokens)
    return data
