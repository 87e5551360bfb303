"""Reproducibility guards: one question asked in different words gets one answer.

Equivalent spellings of a format (case, modifiers written at their defaults, a renamed TOML
copy, a codebook file copied elsewhere) share one GMSE cache key; genuinely different formats
(group size, scale format, codebook bytes) do not. A Monte Carlo GMSE does not depend on the
order of the formats asked for nor on which other formats share the invocation's sample bank.
Every assertion is an equality between two ways of asking, never a number copied from uscl.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gmse_cli import estimate_gmse, format_to_toml, resolve_format
from gmse_cli.gmse.stored import gmse_key

SPELLINGS = {
    "mxfp4": ["MXFP4", "mxfp4-floor", "e2m1-g32-absmax-se8m0", "e2m1-g32-se8m0-absmax", "fp4-g32-absmax-se8m0"],
    "nvfp4": ["NVFP4", "Nvfp4"],
    "2:4+int4": ["2:4+INT4"],
    "had128+int4": ["HAD128+INT4"],
    "vq2-b4": ["VQ2-B4"],
    "int4-g64": ["INT4-G64", "int4-g64-sfp16", "int4-g64-absmax"],
    "lm3": ["lloyd-max-3", "LM3"],
}


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_equivalent_spellings_share_one_key(name, tmp_path):
    renamed = tmp_path / "renamed.toml"
    fmt = resolve_format(name)
    renamed.write_text(format_to_toml(fmt).replace(f'name = "{fmt.name}"', 'name = "someone-else"'))
    keys = {gmse_key(resolve_format(s), 4096) for s in [name, *SPELLINGS[name], str(renamed)]}
    assert len(keys) == 1


def test_different_formats_get_different_keys():
    names = ["int4-g64", "int4-g128", "int4-g32", "int4-g64-sbf16", "sint4-g64", "mxfp4", "mxfp4-rceil",
             "vq2-b4", "vq2-b3", "nvfp4", "int4", "2:4+int4", "had128+int4", "had64+int4"]
    keys = [gmse_key(resolve_format(n), 4096) for n in names]
    assert len(set(keys)) == len(keys)
    assert gmse_key(resolve_format("int4-g64"), 4096) != gmse_key(resolve_format("int4-g64"), 2048)


def _vq_toml(folder, codebook: str):
    path = folder / "vq.toml"
    path.write_text(f'name = "vqfile"\n[[stages]]\nkind = "vq"\ndim = 2\nbits = 2\ncodebook = "{codebook}"\n')
    return path


def test_codebook_files_key_by_bytes_not_path(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "a" / "cb.npy", rng.standard_normal((16, 2)).astype(np.float32))
    shutil.copy(tmp_path / "a" / "cb.npy", tmp_path / "b" / "copy.npy")
    np.save(tmp_path / "c" / "cb.npy", rng.standard_normal((16, 2)).astype(np.float32))
    key_a = gmse_key(resolve_format(str(_vq_toml(tmp_path / "a", "cb.npy"))), 4096)
    key_b = gmse_key(resolve_format(str(_vq_toml(tmp_path / "b", str(tmp_path / "b" / "copy.npy")))), 4096)
    key_c = gmse_key(resolve_format(str(_vq_toml(tmp_path / "c", "cb.npy"))), 4096)
    assert key_a == key_b
    assert key_a != key_c


def _as_tuple(est):
    return est.gmse, est.ci_low, est.ci_high, est.std_err, est.samples, est.method


def test_monte_carlo_ignores_order_and_company():
    formats = ["int4-g64", "2:4+int4", "mxfp4", "had128+int4"]
    forward = estimate_gmse(formats, rel_err=1e-2)
    backward = estimate_gmse(formats[::-1], rel_err=1e-2)[::-1]
    assert [_as_tuple(e) for e in forward] == [_as_tuple(e) for e in backward]
    for name, est in zip(formats, forward, strict=True):
        (alone,) = estimate_gmse([name.upper()], rel_err=1e-2)
        assert _as_tuple(alone) == _as_tuple(est), name
