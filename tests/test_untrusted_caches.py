"""A token cache entry whose meta.json lies (a signed or float dtype, a larger vocabulary than the
tokenizer's) is tokenized again, never served: its ids would reach the embedding as -1 or 300."""

from __future__ import annotations

import json

import conftest
import numpy as np
import pytest

pytest.importorskip("tokenizers")

assert conftest.REPO_ROOT.is_dir()


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda"]
    rng = np.random.default_rng(0)
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(400)) + "\n", encoding="utf-8")
    return src


@pytest.mark.parametrize("lie", ["int16", "vocab"])
def test_a_token_cache_whose_meta_lies_is_tokenized_again(corpus, lie):
    from gmse_cli.training.data import prepare_tokens

    first = prepare_tokens(str(corpus), "bpe:300", val_fraction=0.1)
    vocab = first.tokenizer.vocab_size
    expected = np.asarray(first.train).copy(), np.asarray(first.val).copy()
    assert expected[0].dtype == np.uint16 and vocab <= 300
    meta = json.loads((first.folder / "meta.json").read_text())
    for split in ("train", "val"):
        ids = np.fromfile(first.folder / f"{split}.bin", dtype=np.uint16)
        # same size, same bytes but one: 0xFFFF is -1 as int16; 300 >= vocab
        ids[len(ids) // 2] = 300 if lie == "vocab" else 0xFFFF
        ids.tofile(first.folder / f"{split}.bin")
    if lie == "vocab":
        meta["vocab_size"] = 1 << 16
    else:
        meta["dtype"] = lie
    (first.folder / "meta.json").write_text(json.dumps(meta))
    again = prepare_tokens(str(corpus), "bpe:300", val_fraction=0.1)
    train, val = np.asarray(again.train), np.asarray(again.val)
    assert train.dtype == np.uint16 and int(train.max()) < vocab and int(val.max()) < vocab
    assert np.array_equal(train, expected[0]) and np.array_equal(val, expected[1])
