"""The library called from several threads of one program (a web service, a notebook's executor).

numba's ``workqueue`` threading layer (numba's fallback where neither OpenMP's libgomp nor TBB
loads, or chosen by ``NUMBA_THREADING_LAYER``) is not thread-safe: two threads launching
parallel kernels at once made it abort the whole process (SIGABRT, "Concurrent access has been
detected"). uscl serializes its kernel launches under that layer; under ``omp`` or ``tbb``,
which are thread-safe, threads run side by side and give what one thread gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import conftest
import numpy as np

FORMATS = ["int3-g64", "nf4-g32", "2:4+int4", "had32+int4"]

_SCRIPT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    import numba
    from gmse_cli.compress import compress
    from gmse_cli import estimate_gmse

    x = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
    fmts = ["int3-g64", "nf4-g32", "2:4+int4", "had32+int4"]
    alone = [compress(f, x) for f in fmts]

    def job(i):
        outs = [compress(fmts[(i + k) % 4], x) for k in range(8)]
        est = estimate_gmse([fmts[i % 4]], method="monte-carlo", rel_err=5e-2, seed=i, cache="off")[0].gmse
        return outs, est

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(job, range(4)))
    for i, (outs, _) in enumerate(results):
        for k, y in enumerate(outs):
            assert np.array_equal(y, alone[(i + k) % 4]), (i, k)
    print(numba.threading_layer())
    """
)


def test_workqueue_layer_survives_concurrent_calls(tmp_path):
    """Four threads compressing and estimating at once under the workqueue layer: no abort, and
    every compressed tensor equal to the one a single thread gives."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", USCL_CACHE_DIR=str(tmp_path),
               PYTHONPATH=str(conftest.REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["workqueue"]


def test_threads_match_sequential():
    """Under the default layer: the same compressed tensors from 4 threads as from one."""
    from gmse_cli.compress import compress

    x = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    alone = {f: compress(f, x) for f in FORMATS}
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda f: (f, compress(f, x)), FORMATS * 3))
    for f, y in together:
        assert np.array_equal(y, alone[f]), f


def test_serial_launch_lock_is_reentrant():
    """The lock that serializes kernel launches is taken again by a kernel launched inside
    another's section (a VQ codebook trained inside compress) without deadlock."""
    from gmse_cli.threads import parallel_launches

    with parallel_launches(), parallel_launches():
        pass
