"""The tokenizer and the token pipeline, checked against the `tokenizers` library itself.

- `uscl tokenizer train` writes the tokenizer a BpeTrainer with the documented settings writes
  (byte for byte, twice the same), round-trips text, and refuses an empty, blank or binary corpus
  and an output inside the corpus folder (it would be read as corpus text next time).
- A special token's text inside the corpus is text: before, "<|endoftext|>" quoted in a document
  became an EOS id (a document boundary that is not one) and decoded to nothing.
- Two processes repairing one damaged cache entry: before, the second deleted the entry the first
  had just published, under a reader of it (FileNotFoundError), or the two deletions collided.
- A token file of the right size holding ids outside the vocabulary (overwritten) is recomputed:
  before, it was served, and training failed with an IndexError.
- The train/validation split: disjoint, the whole corpus, the validation share within one line.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

tk = pytest.importorskip("tokenizers")

from gmse_cli.errors import DataError  # noqa: E402

EOS = "<|endoftext|>"
# Some ordinary text with unicode and repeated words, so that merges exist.
LINES = [
    "def parse(text): return text.split()  # naïve",
    "The quick brown fox jumps over the lazy dog.",
    "Größe, café, 日本語のテキスト, emoji 🙂👍🏽 and e\u0301 combining.",
    "\tindented\twith tabs   and   spaces",
    "for i in range(10):\n    print(i ** 2)",
]
# Plain text is read with universal newlines ("\r\n" becomes "\n"); JSON strings keep "\r".
EDGE = ["", "\n", "\r\n\r", "  leading", "trailing  ", "\U0010ffff\x01", "\ufeffbom", "x" * 5000]


def corpus_text(lines: int = 400) -> str:
    return "".join(f"{LINES[i % len(LINES)]} line {i}\n" for i in range(lines))


def direct_bpe(texts, vocab_size: int):
    """The byte-level BPE the README documents, built with `tokenizers` directly."""
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("USCL_CACHE_DIR", str(folder))
    return folder


def test_tokenizer_train_is_the_documented_bpe_and_deterministic(run_cli, tmp_path):
    text = corpus_text()
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        result = run_cli("tokenizer", "train", str(src), "--vocab-size", "300", "--out", str(out), "--json")
        assert result.code == 0, result.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()
    # trained on what a run trains on: the text before the first line end after 98% of it
    cut = text.index("\n", int(len(text) * 0.98)) + 1
    assert outs[0].read_text() == direct_bpe([text[:cut]], 300).to_str()
    got = json.loads(result.stdout)["results"][0]
    assert got["vocab_size"] == 300 == tk.Tokenizer.from_file(str(outs[0])).get_vocab_size()


def test_tokenizer_train_refuses_empty_blank_and_binary_corpora(run_cli, tmp_path):
    cases = {"empty.txt": b"", "blank.txt": b"  \n\n\t\n", "blank.jsonl": b'{"text": " "}\n',
             "binary.dat": bytes(range(256)) * 8, "utf16.txt": "hello world\n".encode("utf-16")}
    for name, content in cases.items():
        src = tmp_path / name
        src.write_bytes(content)
        out = tmp_path / f"{name}.json"
        result = run_cli("tokenizer", "train", str(src), "--vocab-size", "300", "--out", str(out))
        assert result.code == 2, (name, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and ("holds no text" in errors[0] or "NUL" in errors[0]), (name, result.stderr)
        assert not out.exists()


def test_tokenizer_train_refuses_an_output_inside_the_corpus_folder(run_cli, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text(corpus_text())
    out = folder / "sub" / "tok.json"
    result = run_cli("tokenizer", "train", str(folder), "--vocab-size", "300", "--out", str(out))
    assert result.code == 2 and "inside the corpus folder" in result.stderr
    assert not out.exists()


def test_tokenizer_train_refuses_an_output_inside_a_corpus_folder_named_with_tilde(run_cli, tmp_path, monkeypatch):
    """A quoted '~/corpus' was read from the home folder but checked as a folder named '~' (none):
    the tokenizer was written inside the corpus, to be read as text by the next training."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(corpus_text())
    result = run_cli("tokenizer", "train", "~/corpus", "--vocab-size", "300", "--out=~/corpus/tok.json")
    assert result.code == 2 and "inside the corpus folder" in result.stderr, result.stderr
    assert not (tmp_path / "corpus" / "tok.json").exists()


def test_a_vocabulary_smaller_than_asked_is_said(run_cli, tmp_path):
    src = tmp_path / "tiny.txt"
    src.write_text("hello world\n")
    out = tmp_path / "tok.json"
    result = run_cli("tokenizer", "train", str(src), "--vocab-size", "4096", "--out", str(out))
    assert result.code == 0, result.stderr
    have = direct_bpe(["hello world\n"], 4096).get_vocab_size()
    assert have < 4096 and tk.Tokenizer.from_file(str(out)).get_vocab_size() == have
    assert f"gives {have:,} tokens, not 4,096" in result.stderr


def test_special_token_text_in_the_corpus_is_text(cache, tmp_path):
    from gmse_cli.training.data import load_tokenizer, prepare_tokens

    docs = [f"doc {i} quotes {EOS} and </s> inside;\r\n{LINES[i % len(LINES)]}" for i in range(60)]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    tok_path.write_text(direct_bpe(docs, 320).to_str())
    handle = load_tokenizer(str(tok_path))
    for text in [*LINES, *EDGE, EOS, f"a{EOS}b"]:
        assert handle.decode(handle.encode_batch([text])[0]) == text
    data = prepare_tokens(str(src), str(tok_path), val_fraction=0.2)
    tokens = np.concatenate([np.asarray(data.train), np.asarray(data.val)])
    eos = handle.eos_id
    # one EOS per document (the split may cut one document in two: its head has none)
    assert int((tokens == eos).sum()) == len(docs)
    assert tokens[-1] == eos
    plain = tk.Tokenizer.from_file(str(tok_path))
    text = plain.decode([int(t) for t in tokens], skip_special_tokens=False)
    assert text == "".join(d + EOS for d in docs)


def test_split_is_disjoint_whole_and_the_asked_share(tmp_path):
    from gmse_cli.training.data.corpus import split_corpus

    text = corpus_text(3000)
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    longest = max(len(line) for line in text.splitlines(keepends=True))
    for fraction in (0.02, 0.1, 0.5):
        train, val, _ = split_corpus(str(src), text_field="text", val_fraction=fraction)
        head = "".join(t for t, _ in train())
        tail = "".join(t for t, _ in val())
        assert head + tail == text and head.endswith("\n")
        assert 0 <= len(text) * fraction - len(tail) <= longest


def _corpus_and_tokenizer(tmp_path, *, lines: int, vocab: int):
    """A corpus file and a tokenizer.json trained on it directly with `tokenizers`."""
    text = corpus_text(lines)
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    direct = direct_bpe([text], vocab)
    tok_path.write_text(direct.to_str())
    return text, src, tok_path, direct


def test_a_repair_keeps_the_entry_a_concurrent_writer_published(cache, tmp_path, monkeypatch):
    """Writer B saw the entry damaged and tokenizes; meanwhile writer A repairs it and reads it.
    B must neither delete A's entry under A's reader nor fail."""
    from gmse_cli.training.data import cache as token_cache
    from gmse_cli.training.data import prepare_tokens

    text, src, tok_path, direct = _corpus_and_tokenizer(tmp_path, lines=2000, vocab=320)
    first = prepare_tokens(str(src), str(tok_path), val_fraction=0.1)
    expected = np.asarray(first.train).copy(), np.asarray(first.val).copy()
    # independent: the tokens of the training text are what `tokenizers` makes of it
    assert direct.decode([int(t) for t in expected[0]]) + direct.decode([int(t) for t in expected[1]]) == text
    with open(first.folder / "val.bin", "r+b") as handle:
        handle.truncate(2)  # damaged

    write_tokens, rmtree = token_cache._write_tokens, shutil.rmtree
    writer_a = {}

    def b_writes(*args, **kwargs):
        if not writer_a:  # A repairs the entry while B tokenizes
            monkeypatch.setattr(token_cache, "_write_tokens", write_tokens)
            writer_a["data"] = prepare_tokens(str(src), str(tok_path), val_fraction=0.1)
            writer_a["inode"] = os.stat(writer_a["data"].folder / "train.bin").st_ino
            monkeypatch.setattr(token_cache, "_write_tokens", b_writes)
        return write_tokens(*args, **kwargs)

    def rmtree_then_a_reads(path, *args, **kwargs):
        rmtree(path, *args, **kwargs)
        if writer_a:  # A memory-maps its (lazy) splits now
            data = writer_a["data"]
            assert np.array_equal(np.asarray(data.train), expected[0])
            assert np.array_equal(np.asarray(data.val), expected[1])

    monkeypatch.setattr(token_cache, "_write_tokens", b_writes)
    monkeypatch.setattr(token_cache.shutil, "rmtree", rmtree_then_a_reads)
    second = prepare_tokens(str(src), str(tok_path), val_fraction=0.1)
    monkeypatch.setattr(token_cache.shutil, "rmtree", rmtree)
    assert second.folder == writer_a["data"].folder
    assert os.stat(second.folder / "train.bin").st_ino == writer_a["inode"]
    assert np.array_equal(np.asarray(second.train), expected[0])
    assert np.array_equal(np.asarray(second.val), expected[1])
    assert [p.name for p in second.folder.parent.iterdir()] == [second.folder.name]


def test_a_token_file_overwritten_with_ids_outside_the_vocabulary_is_recomputed(cache, tmp_path):
    from gmse_cli.training.data import prepare_tokens

    text, src, tok_path, direct = _corpus_and_tokenizer(tmp_path, lines=300, vocab=300)
    first = prepare_tokens(str(src), str(tok_path), val_fraction=0.1)
    for split in ("train", "val"):
        ids = np.fromfile(first.folder / f"{split}.bin", dtype=np.uint16)
        ids[len(ids) // 2] = 300  # the size stays right; one id no embedding has
        ids.tofile(first.folder / f"{split}.bin")
        again = prepare_tokens(str(src), str(tok_path), val_fraction=0.1)
        tokens = np.concatenate([np.asarray(again.train), np.asarray(again.val)])
        assert tokens.max() < 300
        assert direct.decode([int(t) for t in tokens]) == text


def test_val_fraction_and_missing_corpus_are_data_errors(cache, tmp_path):
    from gmse_cli.training.data import prepare_tokens

    with pytest.raises(DataError, match="does not exist"):
        prepare_tokens(str(tmp_path / "missing.txt"), "bpe:300")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="holds no text"):
        prepare_tokens(str(empty), "bpe:300")


@pytest.mark.parametrize("fraction", ["0.5", "0.75"])
def test_val_fraction_at_or_above_half_is_refused_at_the_option(run_cli, fraction):
    # --help said (0, 1) and the option passed 0.6; the run's config then refused it (< 0.5)
    result = run_cli("train", "--preset", "tiny", "--val-fraction", fraction, "--dry-run")
    assert result.code == 2 and "(0, 0.5)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tokenizer_train_leaves_out_the_validation_tail_a_run_holds_out(run_cli, cache, tmp_path):
    # It trained on every character, so a tokenizer.json made for a run had seen the run's
    # validation text; now it is the tokenizer `bpe:V` trains inside that run (same cut).
    from gmse_cli.training.data import first_tokens

    text = corpus_text(1200)
    src = tmp_path / "corpus.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "tok.json"
    result = run_cli("tokenizer", "train", str(src), "--vocab-size", "400", "--val-fraction", "0.3", "--out", str(out))
    assert result.code == 0, result.stderr
    cut = text.index("\n", int(len(text) * 0.7)) + 1
    assert out.read_text() == direct_bpe([text[:cut]], 400).to_str() != direct_bpe([text], 400).to_str()
    ids, in_run = first_tokens(str(src), "bpe:400", count=500, val_fraction=0.3)
    assert ids.tolist() == tk.Tokenizer.from_file(str(out)).encode(text).ids[:500]
    for bad in ("0", "0.5", "-0.1", "nan"):
        result = run_cli("tokenizer", "train", str(src), "--val-fraction", bad, "--out", str(out))
        assert result.code == 2 and result.stderr.count("\n") == 1 and "--val-fraction" in result.stderr, bad
