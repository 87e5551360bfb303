"""A plain-text corpus is read a piece at a time: the first tokens of a large text file (what
`uscl mse --activations` and a run's tokenizer read) never hold the whole file in memory.
Before, every piece of a text file was listed first (a 200 MB file cost 193 MB to read its
first 1 MB piece)."""

from __future__ import annotations

from gmse_cli.training.data import corpus, iter_corpus


def _counting_pieces(monkeypatch) -> list[int]:
    """Counts the pieces read from the file so far (the real reader, wrapped)."""
    read: list[int] = [0]
    real = corpus._text_pieces

    def counted(handle):
        for piece in real(handle):
            read[0] += 1
            yield piece

    monkeypatch.setattr(corpus, "_text_pieces", counted)
    return read


def test_first_piece_reads_at_most_one_more(tmp_path, monkeypatch):
    line = "x" * 999 + "\n"
    pieces = 5
    path = tmp_path / "big.txt"
    path.write_text(line * (pieces * corpus._CHUNK_CHARS // len(line)))  # 5 pieces, the last short
    read = _counting_pieces(monkeypatch)
    stream = iter_corpus(path)
    text, last = next(stream)
    # A piece ends at the first newline at or past the chunk size.
    assert not last and corpus._CHUNK_CHARS <= len(text) < corpus._CHUNK_CHARS + len(line)
    assert read[0] <= 2, f"{read[0]} of {pieces} pieces read for the first"
    rest = list(stream)
    # Every character once, in order, and only the last piece ends the document.
    assert [end for _, end in rest] == [False] * (pieces - 2) + [True]
    assert text + "".join(t for t, _ in rest) == path.read_text()


def test_empty_and_one_piece_files(tmp_path):
    empty, small = tmp_path / "empty.txt", tmp_path / "small.txt"
    empty.write_text("")
    small.write_text("one line\nno newline at the end")
    assert list(iter_corpus(empty)) == [("", True)]
    assert list(iter_corpus(small)) == [("one line\nno newline at the end", True)]
