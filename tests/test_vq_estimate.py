"""The training-time estimate a first large vq format announces, and the line that says it.

The estimate is checked for its structure (what it counts, and that a codebook already shipped
or cached costs nothing more), not against timings: times belong to benchmarks/vq_training.py,
which measured the constants. Training itself is replaced by a stub here, so nothing is trained
and the codebooks stay exactly what the trainer makes.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from gmse_cli import messages, progress
from gmse_cli.compress.vq import gaussian
from gmse_cli.compress.vq.gaussian import gaussian_codebook, training_seconds
from gmse_cli.compress.vq.streamed import streamed_plan


def test_exact_path_cost_grows_with_codewords_and_dimension():
    # up to 1024 codewords the cost is assignment work: codewords x dim per vector, more or less
    assert training_seconds(1, 12) == 0.0  # 1-D Lloyd on sorted samples: seconds
    for d in (2, 3, 8):
        times = [training_seconds(d, b) for b in range(2, 11)]
        assert all(b > a for a, b in zip(times, times[1:], strict=False))
        ratio = training_seconds(d, 10) / training_seconds(d, 9)
        assert 1.9 < ratio <= 2.0 + 1e-12  # twice the codewords; samples capped at 2^18
    assert training_seconds(16, 10) > 60 * 60  # what a vq16-b0.625 costs: hours, said up front


def test_streamed_cost_counts_only_the_missing_parts(monkeypatch, tmp_path):
    from gmse_cli.compress.vq.store import CodebookInfo, save_codebook

    # vq2-b8 ... vq16-b1 start from exact or shipped codebooks: the streamed runs alone, whose
    # batches hold 2^23 floats, so more vectors (more time) in fewer dimensions
    alone = [training_seconds(d, 16) / streamed_plan(d).iterations for d in (2, 4, 8, 16)]
    assert all(60 > a > b > 0 for a, b in zip(alone, alone[1:], strict=False))
    # nothing shipped or cached: the parts are counted too, each once
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gaussian, "shipped_dir", lambda: tmp_path / "none")
    assert training_seconds(8, 16) == pytest.approx(streamed_plan(8).iterations * alone[2] + training_seconds(4, 8))
    # an odd split trains both halves: 6-D x 11 bits from 3-D x 5 bits and 3-D x 6 bits
    missing = training_seconds(6, 11)
    for bits in (5, 6):
        cb = np.zeros((2**bits, 3), np.float32)
        save_codebook(gaussian.codebook_stem(3, bits), cb, CodebookInfo(
            kind="gaussian", dim=3, index_bits=bits, codewords=2**bits, scale_constant=1.0, mse=0.1, mse_samples=1))
    assert missing == pytest.approx(training_seconds(6, 11) + training_seconds(3, 5) + training_seconds(3, 6))


@pytest.fixture
def stderr_text(monkeypatch, tmp_path):
    """Notices on, stderr captured, an empty codebook cache, and training stubbed out."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=400, color_system=None)
    monkeypatch.setattr(progress, "stderr_console", lambda: console)  # the bars'
    monkeypatch.setattr(messages, "stderr_console", lambda: console)  # the plain lines'
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gaussian, "shipped_dir", lambda: tmp_path / "none")
    trained = []

    def stub(dim, index_bits):
        from gmse_cli.compress.vq.store import CodebookInfo

        trained.append((dim, index_bits))
        cb = np.arange(2**index_bits * dim, dtype=np.float32).reshape(-1, dim)
        return cb, CodebookInfo(kind="gaussian", dim=dim, index_bits=index_bits, codewords=2**index_bits,
                                scale_constant=1.0, mse=0.1, mse_samples=1)

    monkeypatch.setattr(gaussian, "train_gaussian_codebook", stub)
    gaussian_codebook.cache_clear()
    progress.enable_notices(True)
    try:
        yield buffer
    finally:
        progress.enable_notices(False)
        gaussian_codebook.cache_clear()


def test_status_line_says_how_long_and_warns_before_a_long_training(stderr_text, monkeypatch):
    monkeypatch.setattr(gaussian, "training_seconds", lambda d, b: 150.0)
    gaussian_codebook(2, 3)
    assert "training the 2-d Gaussian VQ codebook of 8 codewords (about 2 minutes, once per machine)" in stderr_text.getvalue()
    assert "interrupt" not in stderr_text.getvalue()
    monkeypatch.setattr(gaussian, "training_seconds", lambda d, b: 3 * 3600.0)
    gaussian_codebook(16, 10)
    assert ("training the 16-d Gaussian VQ codebook of 1,024 codewords (about 3.0 hours, once per machine); "
            "over 10 minutes: interrupt now to choose a smaller vq format") in stderr_text.getvalue()
    gaussian_codebook.cache_clear()
    before = stderr_text.getvalue()
    gaussian_codebook(16, 10)  # cached now: nothing trained, nothing said
    assert stderr_text.getvalue() == before
