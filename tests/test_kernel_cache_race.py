"""Two processes saving two versions of one cached kernel at once leave a consistent cache.

numba's index of a kernel's versions is read, extended and rewritten without a lock, and a new
version's data file is named after the index as that process read it. Interleaved as below,
process A's key ended up naming process B's machine code, and every later process computed
with the wrong kernel: a `uscl` kernel per quantization grid shares its source with the others,
so one grid's kernel answered for another's (seen in a checkout after parallel runs: int4-asym
Monte Carlo 0.01180 against the exact 0.01010). The interleaving is forced with pauses, so
the test is deterministic: A reads the index and pauses before writing it; B, once A has read
it, saves its own version, and pauses between writing the index and writing its data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures)

REPO = Path(__file__).resolve().parents[1]

KERNELS = """
from gmse_cli.kernel_cache import numba

def scaled_by(c):
    @numba.njit(cache=True)
    def kernel(x):
        return x * c
    return kernel
"""

PAUSED = """
import sys, time, pathlib
sys.path.insert(0, sys.argv[1])
from numba.core import caching
import kernels

role, marker = sys.argv[2], pathlib.Path(sys.argv[3])
cls = caching.IndexDataCacheFile
if role == "A":  # has read the index: says so, then pauses before writing it
    save_index = cls._save_index
    def paused_save_index(self, overloads):
        marker.write_text("A read the index")
        time.sleep(1.5)
        save_index(self, overloads)
    cls._save_index = paused_save_index
    print(kernels.scaled_by(2.0)(1.0))
else:  # saves only once A has read the index, pausing between the index and the data
    save = cls.save
    def waiting_save(self, key, data):
        while not marker.exists():
            time.sleep(0.01)
        save(self, key, data)
    cls.save = waiting_save
    save_data = cls._save_data
    def paused_save_data(self, name, data):
        time.sleep(3.0)
        save_data(self, name, data)
    cls._save_data = paused_save_data
    print(kernels.scaled_by(3.0)(1.0))
"""

READ_BACK = """
import sys
sys.path.insert(0, sys.argv[1])
import kernels
print(kernels.scaled_by(2.0)(1.0), kernels.scaled_by(3.0)(1.0))
"""


def test_versions_saved_at_once_each_load_their_own_code(tmp_path):
    (tmp_path / "kernels.py").write_text(textwrap.dedent(KERNELS))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    marker = tmp_path / "marker"
    a, b = (subprocess.Popen([sys.executable, "-c", PAUSED, str(tmp_path), role, str(marker)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for role in "AB")
    out_a, err_a = a.communicate(timeout=240)
    out_b, err_b = b.communicate(timeout=240)
    assert (a.returncode, b.returncode) == (0, 0), err_a + err_b
    assert (out_a.split(), out_b.split()) == (["2.0"], ["3.0"])
    # a new process loads both versions from the cache: each must be its own
    back = subprocess.run([sys.executable, "-c", READ_BACK, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert back.returncode == 0, back.stderr
    assert back.stdout.split() == ["2.0", "3.0"]


def test_every_module_caching_kernels_imports_numba_through_the_lock():
    # a new kernel module importing numba itself would bring the race back for its kernels
    package = REPO / "gmse_cli"
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "cache=True" in text:
            assert "from gmse_cli.kernel_cache import numba" in text, path.relative_to(REPO)
