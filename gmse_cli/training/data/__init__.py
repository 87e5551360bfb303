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

Modules: :mod:`.corpus` (reading local corpora, the split), :mod:`.tokenizer` (loading,
training and caching tokenizers), :mod:`.cache` (the on-disk token cache), :mod:`.c4`
(streaming C4), :mod:`.prepare` (:func:`prepare_tokens`, the entry point), :mod:`.windows`
(batches).
"""

from __future__ import annotations

from gmse_cli.training.data.cache import TokenData
from gmse_cli.training.data.corpus import corpus_files, iter_corpus, split_corpus
from gmse_cli.training.data.prepare import first_tokens, prepare_tokens
from gmse_cli.training.data.tokenizer import (
    EOS_TOKEN,
    TokenizerHandle,
    load_tokenizer,
    require_tokenizers,
    train_bpe,
)
from gmse_cli.training.data.windows import TokenWindows, eval_windows, model_windows

__all__ = [
    "TokenizerHandle",
    "TokenData",
    "TokenWindows",
    "load_tokenizer",
    "train_bpe",
    "require_tokenizers",
    "iter_corpus",
    "split_corpus",
    "corpus_files",
    "prepare_tokens",
    "first_tokens",
    "eval_windows",
    "model_windows",
    "EOS_TOKEN",
]
