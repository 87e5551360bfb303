"""Benchmark: what `uscl rank` adds on top of `uscl gmse --all` (target: under 10%).

Measures, in one run on this machine, whole processes over the whole catalog:
  (a) cold numba kernel cache (a fresh NUMBA_CACHE_DIR each, so compilation is included):
      `uscl gmse --all --json` then `uscl rank --json`;
  (b) warm kernel cache: the two commands interleaved --repeat times, the best of each compared;
each as wall time and as the child's CPU time (user + system), which other load on a shared
machine disturbs far less;
  (c) in one process, after warm-up: the GMSE engine over the catalog alone against rank()
      over the catalog (the law's Monte Carlo draws and the rows), and the import time of the
      ranking modules.
Both commands compute the same GMSEs (rank's stage formats of the catalog's composites are
themselves catalog formats, so it asks the engine for nothing more).

Run: python benchmarks/rank.py [--repeat 5] [--law FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]


class _Timing(NamedTuple):
    wall: float
    cpu: float  # user + system of the child: far less sensitive than wall time to other load


def _run(args: list[str], numba_cache: str) -> _Timing:
    env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache, PYTHONPATH=str(REPO))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmse_cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _Timing(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def _ratio(name: str, gmse: _Timing, rank: _Timing) -> str:
    return (f"{name}: gmse --all {gmse.wall:.2f} s wall / {gmse.cpu:.2f} s CPU, rank {rank.wall:.2f} s wall / "
            f"{rank.cpu:.2f} s CPU; ratio wall {rank.wall / gmse.wall:.3f}, CPU {rank.cpu / gmse.cpu:.3f} "
            f"({(rank.cpu / gmse.cpu - 1) * 100:+.1f}% CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="warm runs of each command")
    parser.add_argument("--law", default=None, help="law file for rank (default: the shipped law)")
    args = parser.parse_args()
    gmse_cmd = ["gmse", "--all", "--json"]
    rank_cmd = ["rank", "--json"] + (["--law", args.law] if args.law else [])

    # Warm the per-user caches that are not kernels (computed VQ codebooks) once, so the cold
    # runs below differ from the warm ones by numba compilation alone.
    with tempfile.TemporaryDirectory() as cache:
        _run(rank_cmd, cache)

    with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
        cold_gmse = _run(gmse_cmd, c1)
        cold_rank = _run(rank_cmd, c2)
    print(_ratio("(a) cold kernel cache", cold_gmse, cold_rank))

    with tempfile.TemporaryDirectory() as cache:
        _run(gmse_cmd, cache)  # compile once into this cache
        warm_gmse, warm_rank = [], []
        for _ in range(args.repeat):  # interleaved, so drifting load hits both alike
            warm_gmse.append(_run(gmse_cmd, cache))
            warm_rank.append(_run(rank_cmd, cache))
    # The least of the repeats: other processes only ever add time.
    best = lambda runs: _Timing(min(r.wall for r in runs), min(r.cpu for r in runs))  # noqa: E731
    print(_ratio(f"(b) warm kernel cache, best of {args.repeat}", best(warm_gmse), best(warm_rank)))

    sys.path.insert(0, str(REPO))
    from gmse_cli.gmse import estimate_gmse

    start = time.perf_counter()
    import gmse_cli.rank  # noqa: F401  (import cost of the ranking layer on top of the engine)

    imported = time.perf_counter() - start
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank
    from gmse_cli.spec import catalog

    law = load_law(args.law)
    formats = [f for f in catalog().values() if all(fam in law.families for fam in f.families)]
    rank(formats, law=law)  # warm-up: kernels, codebooks
    start = time.perf_counter()
    estimate_gmse(formats)
    engine = time.perf_counter() - start
    start = time.perf_counter()
    rank(formats, law=law)
    ranked = time.perf_counter() - start
    print(f"(c) in process, {len(formats)} formats: GMSE engine {engine * 1e3:.0f} ms, rank() {ranked * 1e3:.0f} ms "
          f"(ranking adds {(ranked - engine) * 1e3:.0f} ms); importing gmse_cli.rank took {imported * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
