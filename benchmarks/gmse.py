"""Benchmark of the GMSE engine (issue: core).

Measures, in one run on this machine:
  (a) wall time of `uscl gmse --all --recompute` (whole process) with a cold numba cache (compilation
      included) and a warm one, and the engine time alone for the catalog at rel-err 1e-3;
  (b) Monte Carlo samples per second per family (numba backend);
  (c) the ratio against the straightforward vectorized numpy compressors (backend "numpy")
      at the same sample counts.

Run: python benchmarks/gmse.py [--rel-err 1e-3] [--numpy-batches 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _whole_process(numba_cache: str) -> float:
    # --recompute: the shipped table would answer without running (or compiling) anything;
    # the GMSE cache it refreshes lives beside the numba cache, not in the user's
    env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache, USCL_CACHE_DIR=numba_cache)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gmse_cli", "gmse", "--all", "--recompute", "--json"],
        check=True, env=env, stdout=subprocess.DEVNULL, cwd=REPO,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rel-err", type=float, default=1e-3)
    parser.add_argument("--numpy-batches", type=int, default=4, help="batches per format for the numpy baseline")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from gmse_cli.gmse import SampleBank, estimate_gmse, has_exact
    from gmse_cli.spec import catalog

    with tempfile.TemporaryDirectory() as cache:
        cold = _whole_process(cache)
        warm = _whole_process(cache)
    print(f"(a) `uscl gmse --all --recompute` whole process: cold numba cache {cold:.2f} s, warm {warm:.2f} s "
          f"(compilation ~{cold - warm:.2f} s)")

    formats = list(catalog().values())
    estimate_gmse(formats[:3], rel_err=args.rel_err)  # load kernels in this process
    start = time.perf_counter()
    results = estimate_gmse(formats, rel_err=args.rel_err)
    engine = time.perf_counter() - start
    mc = sum(r.method == "monte-carlo" for r in results)
    print(f"    engine alone, whole catalog ({len(formats)} formats, {mc} Monte Carlo) at rel-err "
          f"{args.rel_err:g}: {engine:.2f} s (target < 2 s)")

    # (b) + (c): per format, the same batches through numba and through numpy.
    fast = SampleBank(seed=1, backend="numba")
    slow = SampleBank(seed=1, backend="numpy")
    per_family: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # samples, t_fast, t_slow
    for fmt in formats:
        if has_exact(fmt) and fmt.family == "quantization" and fmt.stages[-1].scale == "none":
            continue  # plain casts: exact path only
        n = args.numpy_batches
        for i in range(n):
            fast.batch(i)
            slow.batch(i)
        fast.batch_totals(fmt, 0)  # compile outside the timing
        t0 = time.perf_counter()
        for i in range(n):
            fast.batch_totals(fmt, i)
        t1 = time.perf_counter()
        for i in range(n):
            slow.batch_totals(fmt, i)
        t2 = time.perf_counter()
        family = fmt.family.split("+")[0] if "+" not in fmt.family else "composite"
        if fmt.name.startswith("mx") or fmt.name == "nvfp4":
            family = "mx/nvfp4"
        acc = per_family[family]
        acc[0] += n * fast.batch_elements
        acc[1] += t1 - t0
        acc[2] += t2 - t1
    print("(b,c) family            samples/s (numba)   samples/s (numpy)   speed-up")
    for family, (samples, t_fast, t_slow) in sorted(per_family.items()):
        print(f"      {family:<16} {samples / t_fast:>16.3e} {samples / t_slow:>19.3e} {t_slow / t_fast:>10.1f}x")


if __name__ == "__main__":
    main()
