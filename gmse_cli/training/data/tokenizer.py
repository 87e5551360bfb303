"""Tokenizers: a hub id (transformers), a local ``tokenizer.json`` (tokenizers) or a model folder
holding one (or another tokenizer transformers reads offline), or ``bpe:V`` -- a byte-level
BPE trained on the training text and cached by content hash.

Padding and truncation that a ``tokenizer.json`` may carry (sentence-transformers' files pad
and cut every text to 128 tokens) are switched off: the pipeline encodes long pieces of text
and cuts windows itself. A special token's text inside the corpus (``<|endoftext|>`` quoted in
a document) is encoded as ordinary text, as GPT-2's ``encode_ordinary`` does: only the pipeline
puts special ids (EOS between documents)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gmse_cli.atomic import write_text_atomic
from gmse_cli.cleanup import sweep_cache_folder
from gmse_cli.errors import BackendMissing, DataError
from gmse_cli.inputs import does_not_exist, user_path
from gmse_cli.paths import cache_dir

__all__ = ["EOS_TOKEN", "TokenizerHandle", "load_tokenizer", "require_tokenizers", "train_bpe"]

EOS_TOKEN = "<|endoftext|>"

# Files a Hugging Face tokenizer is built from, besides tokenizer.json.
_TOKENIZER_FILES = ("tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model")


@dataclass(frozen=True)
class TokenizerHandle:
    """A tokenizer reduced to what training needs."""

    source: str
    sha256: str
    vocab_size: int
    eos_id: int | None
    encode_batch: Callable[[list[str]], list[list[int]]]
    decode: Callable[[list[int]], str]
    # ids the tokenizer's post-processor puts before and after one sequence (BERT's [CLS] and
    # [SEP], Llama's <s>); encode_batch leaves them out, a model that expects them gets them
    # around each window
    specials: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    to_json: Callable[[], str] | None = None  # the tokenizers JSON, to keep beside a model


def require_tokenizers() -> Any:
    """The ``tokenizers`` module, or one line saying which extra to install."""
    try:
        import tokenizers
    except ImportError:
        raise BackendMissing("training needs the [train] extra: pip install 'uscl[train]'") from None
    return tokenizers


def train_bpe(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE (GPT-2 style, with one ``<|endoftext|>`` special token) trained on ``texts``."""
    tk = require_tokenizers()
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


def _plain(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Switch off padding and truncation, encode special tokens' text as text; return the
    special ids around one sequence."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    # A corpus that quotes "<|endoftext|>" (or "</s>", "[SEP]") holds text, not a document
    # boundary: the pipeline puts EOS ids between documents itself.
    tokenizer.encode_special_tokens = True
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    wrapped = tokenizer.encode("a", add_special_tokens=True).ids
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return tuple(wrapped[:start]), tuple(wrapped[start + len(bare) :])
    return (), ()  # a post-processor that rewrites the text's own ids: add nothing


def _handle_from_tokenizers(tokenizer: Any, source: str) -> TokenizerHandle:
    blob = tokenizer.to_str()
    specials = _plain(tokenizer)
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
        specials=specials,
        to_json=lambda: blob,
    )


def load_tokenizer(spec: str, *, train_texts: Callable[[], Iterable[str]] | None = None,
                   corpus_tag: str | None = None) -> TokenizerHandle:
    """Resolve a tokenizer spec: ``bpe:V``, a local tokenizer.json, a model folder, or a hub id.

    A folder gives its ``tokenizer.json``, or else whatever tokenizer transformers reads from
    it without the network (``local_files_only``, never remote code)."""
    tk = require_tokenizers()
    if spec.startswith("bpe:"):
        if train_texts is None or corpus_tag is None:
            raise DataError(f"tokenizer '{spec}' trains on a local corpus; give a tokenizer for 'c4'")
        vocab = int(spec[4:])
        folder = cache_dir() / "tokenizers"
        folder.mkdir(parents=True, exist_ok=True)
        sweep_cache_folder(folder)  # temporary files killed writers left
        cached = folder / f"bpe{vocab}-{corpus_tag}.json"
        try:
            tokenizer = tk.Tokenizer.from_file(str(cached))
        except Exception:  # absent, or damaged (tokenizers raises a bare Exception): train it again
            tokenizer = train_bpe(train_texts(), vocab_size=vocab)
            try:
                write_text_atomic(cached, tokenizer.to_str())
            except OSError as exc:  # a full disk: one line naming the cache, not a traceback
                raise DataError(f"cannot write tokenizer cache {cached}: {exc.strerror or exc}") from None
        return _handle_from_tokenizers(tokenizer, spec)
    path = user_path(spec)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif any((path / name).is_file() for name in _TOKENIZER_FILES):
            return _hub_tokenizer(str(path), local=True)
        else:
            # transformers would build a tokenizer of special tokens alone from config.json
            raise DataError(f"folder '{spec}' holds no tokenizer (no tokenizer.json or vocabulary file); "
                            "give one with --tokenizer")
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise DataError(f"tokenizer file '{spec}' {does_not_exist(spec)} (train one: uscl tokenizer train)")
        try:
            tokenizer = tk.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise DataError(f"{spec}: not a tokenizers JSON file ({exc})") from None
        return _handle_from_tokenizers(tokenizer, spec)
    return _hub_tokenizer(spec)


def _hub_tokenizer(name: str, *, local: bool = False) -> TokenizerHandle:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BackendMissing("hub tokenizers need transformers: pip install 'uscl[train]'") from None
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=local, trust_remote_code=False)
    except Exception as exc:  # network, gating, missing repo: all end the same way for the user
        if local:
            raise DataError(
                f"folder '{name}' holds no tokenizer that loads offline ({type(exc).__name__}); "
                "give one with --tokenizer (a tokenizer.json)"
            ) from None
        raise DataError(
            f"cannot load tokenizer '{name}' from the hub ({type(exc).__name__}); offline, give a "
            "local tokenizer.json or bpe:V (e.g. --tokenizer bpe:8192)"
        ) from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise DataError(f"tokenizer '{name}' has no fast (tokenizers) backend")
    blob = backend.to_str()
    specials = _plain(backend)
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
        specials=specials,
        to_json=lambda: blob,
    )
