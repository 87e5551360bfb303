"""The library under multiprocessing, after the parent already ran numba parallel kernels.

With GNU OpenMP (numba's ``omp`` layer on Linux) a forked child's first kernel made numba kill
it with SIGTERM, and ``multiprocessing.Pool`` then waited forever for the lost task (measured:
Pool(2).map over 4 calls timed out after 240 s). Now the child raises a UsclError that names
the way out; 'spawn' workers give what the parent gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import conftest

_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys
    import numpy as np
    import numba
    from gmse_cli.compress import compress
    from gmse_cli.errors import UsclError

    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)

    def job(name):
        try:
            return float(compress(name, x).astype(np.float64).sum())
        except UsclError as exc:
            return str(exc)

    if __name__ == "__main__":
        want = [job(n) for n in ("int3-g64", "2:4+int4")]  # the parent runs kernels first
        with mp.get_context(sys.argv[1]).Pool(1) as pool:
            got = pool.map_async(job, ["int3-g64", "2:4+int4"]).get(timeout=90)
        print(numba.threading_layer())
        print(got == want)
        print(got[0] if isinstance(got[0], str) else "")
    """
)


def _run(tmp_path, method: str) -> list[str]:
    script = tmp_path / "pool.py"
    script.write_text(_SCRIPT, encoding="utf-8")
    env = dict(os.environ, USCL_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(conftest.REPO_ROOT))
    done = subprocess.run([sys.executable, str(script), method], env=env, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_spawn_workers_match_the_parent(tmp_path):
    layer, same, _ = _run(tmp_path, "spawn")
    assert same == "True"


def test_fork_after_kernels_is_an_error_not_a_hang(tmp_path):
    layer, same, message = _run(tmp_path, "fork")
    if layer != "omp":  # tbb and workqueue are fork-safe: the child computes as the parent does
        assert same == "True"
        return
    assert same == "False"
    assert "forked" in message and "'spawn'" in message
