"""C4: allenai/c4 'en' streamed with ``datasets``; its own validation split is held out. Only as
many documents as the budget needs are tokenized (the stream order is fixed, so a larger
cache's prefix equals a smaller one and is reused)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gmse_cli.errors import BackendMissing, DataError
from gmse_cli.training.data.cache import (
    CACHE_VERSION,
    TokenData,
    entry_folder,
    read_entry_meta,
    write_entry,
)
from gmse_cli.training.data.tokenizer import TokenizerHandle, load_tokenizer

__all__ = ["prepare_c4", "c4_documents"]


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise BackendMissing("C4 streaming needs datasets: pip install 'uscl[train]'") from None
    return datasets


def c4_documents(split: str) -> Iterator[tuple[str, bool]]:
    """allenai/c4 'en' documents of ``split``, streamed in the hub's fixed order."""
    datasets = _datasets()
    try:
        stream = datasets.load_dataset("allenai/c4", "en", split=split, streaming=True)
        for row in stream:
            yield row["text"], True
    except Exception as exc:  # network and hub failures
        raise DataError(f"cannot stream allenai/c4 ({type(exc).__name__}: {exc}); offline, give --data PATH") from None


def prepare_c4(
    tokenizer: str, min_train: int, min_val: int, progress: Callable[[str], None] | None
) -> TokenData:
    """Stream allenai/c4 'en' and tokenize the prefix the budget needs (with 5% spare)."""
    if tokenizer.startswith("bpe:"):
        raise DataError("tokenizer bpe:V trains on a local corpus; for c4 give a hub id or tokenizer.json")
    _datasets()  # fail before tokenizing anything
    tok = load_tokenizer(tokenizer)
    key = hashlib.sha256(f"{CACHE_VERSION}|c4-en|{tok.sha256}".encode()).hexdigest()[:24]
    folder = entry_folder(f"c4-{key}")
    want_train = int(min_train * 1.05) + 1
    want_val = max(min_val, 1)
    meta = read_entry_meta(folder, tok.vocab_size)
    if meta is not None and meta["train_tokens"] >= want_train and meta["val_tokens"] >= want_val:
        return _c4_data(folder, meta, tok)
    if progress:
        progress(f"streaming allenai/c4 'en' and tokenizing {want_train:,} training tokens (cached in {folder})")

    write_entry(folder, train=c4_documents("train"), val=c4_documents("validation"), tok=tok, tokenizer=tokenizer,
                source="c4", data_sha256=None, val_fraction=None, train_limit=want_train,
                val_limit=want_val)
    return _c4_data(folder, json.loads((folder / "meta.json").read_text()), tok)


def _c4_data(folder: Path, meta: dict[str, Any], tok: TokenizerHandle) -> TokenData:
    return TokenData(folder=folder, source="c4", data_sha256=meta["data_sha256"], tokenizer=tok,
                     val_fraction=None)
