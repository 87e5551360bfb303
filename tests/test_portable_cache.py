"""A codebook cache that cannot be used costs time, never the answer.

Every other cache (GMSEs, remembered constants, parsed TOML) degrades to no cache; the codebook
cache did not: with no home folder (and no USCL_CACHE_DIR), a file in the way of the cache
folder, or a read-only cache, ``uscl gmse vq4-b3-g64`` exited 2 — at once, or after training the
codebook (3 minutes measured on a read-only bind mount) and throwing it away. Now the command
answers with the codebook it trained, and one note says it was not kept.
"""

from __future__ import annotations

import errno
import os

import conftest  # noqa: F401  (the shared fixtures)
import numpy as np
import pytest

from gmse_cli.compress import vq
from gmse_cli.compress.vq import gaussian, store


@pytest.fixture
def stub_training(private_codebook_cache, monkeypatch):
    """Training stubbed (only where the codebook goes matters), counted."""
    calls = []

    def trained(dim, index_bits, **kwargs):
        calls.append((dim, index_bits))
        info = store.CodebookInfo(kind="gaussian", dim=dim, index_bits=index_bits, codewords=2**index_bits,
                                  scale_constant=1.0, mse=1.0, mse_samples=1)
        return np.ones((2**index_bits, dim), np.float32), info

    monkeypatch.setattr(gaussian, "train_gaussian_codebook", trained)
    vq.clear_caches()
    yield calls
    vq.clear_caches()


def _answered_with_one_note(res, *formats):
    assert res.code == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: "), res.stderr
    for name in formats:
        assert name in res.stdout
    return lines[0]


def test_a_full_disk_answers_with_one_note(stub_training, run_cli, monkeypatch):
    def full(path, data, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_atomic", full)
    line = _answered_with_one_note(run_cli("gmse", "vq16-b0.0625", "vq16-b0.125", "--rel-err", "0.05", "--recompute"),
                                   "vq16-b0.0625", "vq16-b0.125")
    assert "cannot write codebook cache '" in line and "no space left on device" in line
    assert stub_training == [(16, 1), (16, 2)]  # both trained, one note for both


def test_a_file_in_the_way_of_the_cache_folder_answers_with_one_note(stub_training, run_cli, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("USCL_CACHE_DIR", str(blocker))
    line = _answered_with_one_note(run_cli("gmse", "vq16-b0.0625", "--rel-err", "0.05", "--recompute"), "vq16-b0.0625")
    assert "cannot use cache folder" in line and str(blocker) in line
    assert stub_training == [(16, 1)]


def test_no_home_folder_answers_with_one_note(stub_training, run_cli, monkeypatch):
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)  # else the cache needs no home
    monkeypatch.delenv("USCL_CACHE_DIR", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # a container's user id, in no passwd file
    line = _answered_with_one_note(run_cli("gmse", "vq16-b0.0625", "--rel-err", "0.05", "--recompute"), "vq16-b0.0625")
    assert "home folder" in line


def test_a_usable_cache_keeps_the_codebook_and_says_nothing(stub_training, run_cli):
    res = run_cli("gmse", "vq16-b0.0625", "--rel-err", "0.05", "--recompute")
    assert res.code == 0 and "note:" not in res.stderr, res.stderr
    vq.clear_caches()
    assert run_cli("gmse", "vq16-b0.0625", "--rel-err", "0.05", "--recompute").code == 0
    assert stub_training == [(16, 1)]  # the second run read it from the cache
