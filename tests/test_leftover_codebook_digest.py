"""Codebook cache files are checked against a digest, as every other cache is (README, "A damaged
cache entry ... is recomputed, never served").

Before: a ``STEM.npy`` of the right shape and dtype with other values was served as the
codebook (only its shape and dtype were checked). Digests here are computed with hashlib on the
files' bytes, and the expected codebook is the one trained before the damage (training is
seeded: the same codebook on every run).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from gmse_cli.compress import vq
from gmse_cli.compress.vq import store
from gmse_cli.compress.vq.gaussian import codebook_stem
from gmse_cli.spec import VQ

pytestmark = pytest.mark.usefixtures("private_codebook_cache")

STAGE = VQ(dim=3, bits=1)  # 8 codewords in 3-D: not shipped, trained in well under a second


def _files():
    stem = codebook_stem(3, 3)
    return store.codebook_dir() / f"{stem}.npy", store.codebook_dir() / f"{stem}.json"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained_once():
    """The codebook trained once for the module (5 s), with its files' bytes as written."""
    vq.clear_caches()
    for path in _files():
        path.unlink(missing_ok=True)
    first = vq.codebook(STAGE).copy()
    vq.clear_caches()
    return first, [path.read_bytes() for path in _files()]


@pytest.fixture
def trained(trained_once):
    """Each test starts from the files training wrote, and no codebook in memory."""
    first, written = trained_once
    for path, data in zip(_files(), written, strict=True):
        path.write_bytes(data)
    vq.clear_caches()
    return first.copy()


def test_a_stored_codebook_records_the_digest_of_its_bytes(trained):
    npy, record = _files()
    assert json.loads(record.read_text())["sha256"] == _sha256(npy)


def test_a_damaged_codebook_of_the_right_shape_is_trained_again(trained, capfd):
    npy, record = _files()
    damaged = trained.copy()
    damaged[0] *= 3.0  # the right shape and dtype, one codeword moved
    np.save(npy, damaged, allow_pickle=False)
    capfd.readouterr()
    again = vq.codebook(STAGE)
    err = capfd.readouterr().err
    np.testing.assert_array_equal(again, trained)
    assert "damaged" in err and npy.name in err.replace("\n", "")
    # rewritten: the file holds the trained codebook again, and its record its digest
    np.testing.assert_array_equal(np.load(npy), trained)
    assert json.loads(record.read_text())["sha256"] == _sha256(npy)


def test_a_record_without_a_digest_is_stamped_not_retrained(trained, capfd):
    """An entry written before records carried digests is read as it is and stamped."""
    npy, record = _files()
    data = json.loads(record.read_text())
    data["sha256"] = None
    record.write_text(json.dumps(data))
    before = npy.stat().st_mtime_ns
    capfd.readouterr()
    np.testing.assert_array_equal(vq.codebook(STAGE), trained)
    assert "damaged" not in capfd.readouterr().err
    assert npy.stat().st_mtime_ns == before
    assert json.loads(record.read_text())["sha256"] == _sha256(npy)


def test_every_shipped_codebook_carries_its_digest_and_loads():
    folder = store.shipped_dir()
    records = sorted(folder.glob("*.json"))
    assert len(records) == 24
    for path in records:
        npy = path.with_suffix(".npy")
        assert json.loads(path.read_text())["sha256"] == _sha256(npy), path.name
        hit = store.load_codebook(path.stem, with_array=True, directory=folder)
        assert hit is not None and hit[0].shape == (hit[1].codewords, hit[1].dim)


def test_a_damaged_shipped_codebook_is_not_served(tmp_path, capfd):
    stem = codebook_stem(2, 2)
    for suffix in (".npy", ".json"):
        shutil.copy(store.shipped_dir() / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    cb = np.load(tmp_path / f"{stem}.npy")
    np.save(tmp_path / f"{stem}.npy", cb[::-1].copy(), allow_pickle=False)  # the same codewords, reordered
    assert store.load_codebook(stem, with_array=True, directory=tmp_path) is None
    assert "damaged" in capfd.readouterr().err
