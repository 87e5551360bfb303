"""Faults found by review37 in the round after f198d1f."""

from __future__ import annotations

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)
import pytest


def _corpus(folder):
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    lines = (" ".join(words[(i * 7 + j * 3) % 5] for j in range(12)) for i in range(400))
    path = folder / "c.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.mark.parametrize("name", ["tok[bold].json", "x" * 100 + "[red]tok.json"])
def test_tokenizer_train_prints_the_written_path_as_it_is(run_cli, tmp_path, monkeypatch, name):
    # stdout said 'tok.json' for --out 'tok[bold].json' (read as rich markup), a path longer than
    # the page was broken over two lines, and the tabs were spaces: a script reading the line got
    # another path.
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / name
    result = run_cli("tokenizer", "train", str(_corpus(tmp_path)), "--vocab-size", "300", "--out", str(out))
    assert result.code == 0, result.stderr
    assert out.is_file()
    (line,) = result.stdout.splitlines()
    path, vocab, digest = line.split("\t")
    assert path == str(out) and vocab.startswith("vocab ") and digest.startswith("sha256 ")
