"""A codebook cache write that fails for a reason other than space does not say 'free some space'.

Before: a codebook record replaced by a folder failed its rewrite with "is a directory (free
some space, or set USCL_CACHE_DIR to another folder)", pointing the user at the wrong fix.
"""

from __future__ import annotations

import errno
import os

import conftest  # noqa: F401  (the shared fixtures)
import numpy as np
import pytest

from gmse_cli.compress.vq.store import CodebookInfo, save_codebook
from gmse_cli.errors import CacheError

INFO = CodebookInfo(kind="gaussian", dim=2, index_bits=2, codewords=4, scale_constant=1.0, mse=0.1, mse_samples=10)


def test_a_folder_in_the_way_names_the_folder_not_the_disk(tmp_path):
    (tmp_path / "cb.json").mkdir()
    with pytest.raises(CacheError) as caught:
        save_codebook("cb", np.zeros((4, 2)), INFO, directory=tmp_path)
    message = str(caught.value)
    assert "cb.json" in message and ("not a regular file" in message or os.strerror(errno.EISDIR).lower() in message)
    assert "free some space" not in message and "USCL_CACHE_DIR" in message


def test_a_full_disk_still_says_free_some_space(tmp_path, monkeypatch):
    import gmse_cli.compress.vq.store as store

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_atomic", full)
    with pytest.raises(CacheError, match="free some space, or set USCL_CACHE_DIR"):
        save_codebook("cb", np.zeros((4, 2)), INFO, directory=tmp_path)
