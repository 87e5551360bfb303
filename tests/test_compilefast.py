"""What a format's first run compiles (task `compilefast`): only its own grid's loops, the mse
search only where the format searches, and nothing at all in a second process on the same
numba cache (the per-grid kernels are closures: their disk cache must still hit). Structural
checks on numba's compile events, in child processes with a fresh NUMBA_CACHE_DIR; no timing."""

from __future__ import annotations

import os
import subprocess
import sys

import conftest
import pytest

SCRIPT = r"""
import sys
import numpy as np
from numba.core import event
names = []
class Compiles(event.Listener):
    def on_start(self, ev):
        names.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Compiles())
from gmse_cli.compress import compress
from gmse_cli.spec import resolve_format
x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
for name in sys.argv[1:]:
    compress(resolve_format(name), x, backend="numba")
print("\n".join(names))
"""


def _compiled(numba_cache, *formats: str) -> list[str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache), PYTHONPATH=str(conftest.REPO_ROOT))
    res = subprocess.run([sys.executable, "-c", SCRIPT, *formats], env=env, capture_output=True,
                         text=True, check=True, cwd=conftest.REPO_ROOT)
    return res.stdout.split()


@pytest.fixture(scope="module")
def sint4_cache(tmp_path_factory):
    """A fresh numba cache and what a first process compiled into it for sint4-g64 alone."""
    cache = tmp_path_factory.mktemp("numba")
    return cache, _compiled(cache, "sint4-g64")


def test_a_format_compiles_its_own_grid_only_and_no_search_it_does_not_use(sint4_cache):
    _, names = sint4_cache  # signed int grid, absmax rule, fp16 scales
    assert names, "a fresh cache compiles"
    assert not [n for n in names if "mse_ratio" in n], names  # absmax: no mse search compiled
    assert "k_write_row" not in names, names  # the every-grid row writer is not compiled


def test_a_second_process_compiles_nothing(sint4_cache):
    cache, _ = sint4_cache  # sint4-g64's kernels are there; the other two formats' are not
    formats = ("sint4-g64", "sint4-tensor-mse", "e3m2-g32-se4m3")
    assert _compiled(cache, *formats)
    assert _compiled(cache, *formats) == []
