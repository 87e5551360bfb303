"""Benchmark: what `uscl rank` adds on top of `uscl gmse --all` (target: under 10%).

Measures, in one run on this machine, over the whole catalog:
  (a) whole processes, cold numba kernel cache (a fresh NUMBA_CACHE_DIR each, compilation
      included): `uscl gmse --all --json` then `uscl rank --json`;
  (b) whole processes, warm kernel cache: the two commands interleaved --repeat times, the
      best of each compared (other load only ever adds time);
  (c) in one process: the GMSE engine over the catalog against the ranking layer alone (rank()
      with the engine's answers memoized, so only the law, the Monte Carlo draws and the rows
      are timed), medians of --repeat, and the import time of gmse_cli.rank on top of the engine.
(a) and (b) report wall time and the child's CPU time (user + system), which other processes
on a shared machine disturb far less. Both commands compute the same GMSEs: the stage formats
of the catalog's composites are themselves catalog formats, so rank asks the engine for nothing
more. The processes run on a snapshot of the package copied at start, so edits to the working
tree during the run (which invalidate numba's cache) cannot skew the comparison.

Run: python benchmarks/rank.py [--repeat 3] [--law FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from snapshot import snapshot_package

REPO = Path(__file__).resolve().parents[1]


class _Timing(NamedTuple):
    wall: float
    cpu: float  # user + system of the child


def _run(root: Path, args: list[str], numba_cache: str) -> _Timing:
    env = dict(os.environ, NUMBA_CACHE_DIR=numba_cache, PYTHONPATH=str(root))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmse_cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _Timing(wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def _ratio(name: str, gmse: _Timing, rank: _Timing) -> str:
    return (f"{name}: gmse --all {gmse.wall:.2f} s wall / {gmse.cpu:.2f} s CPU, rank {rank.wall:.2f} s wall / "
            f"{rank.cpu:.2f} s CPU; ratio wall {rank.wall / gmse.wall:.3f}, CPU {rank.cpu / gmse.cpu:.3f} "
            f"({(rank.cpu / gmse.cpu - 1) * 100:+.1f}% CPU)")


def _in_process(root: Path, law_arg: str | None, repeat: int) -> None:
    sys.path.insert(0, str(root))
    import gmse_cli.gmse as engine_module

    start = time.perf_counter()
    import gmse_cli.rank  # noqa: F401  (import cost of the ranking layer on top of the engine)

    imported = time.perf_counter() - start
    from gmse_cli.law import load_law
    from gmse_cli.rank import rank
    from gmse_cli.spec import catalog

    law = load_law(law_arg)
    formats = [f for f in catalog().values() if all(fam in law.families for fam in f.families)]
    real = engine_module.estimate_gmse
    rank(formats, law=law)  # warm-up: kernels, codebooks
    engine = []
    for _ in range(repeat):
        start = time.perf_counter()
        answers = real(formats)
        engine.append(time.perf_counter() - start)
    memo = {tuple(f.stages for f in formats): answers}

    def remembered(fmts, **kwargs):
        key = tuple(f.stages for f in fmts)
        return memo[key] if key in memo else memo.setdefault(key, real(fmts, **kwargs))

    engine_module.estimate_gmse = remembered
    rank(formats, law=law)  # fills the memo in rank's own order
    ranking = []
    for _ in range(repeat):
        start = time.perf_counter()
        rank(formats, law=law)
        ranking.append(time.perf_counter() - start)
    engine_module.estimate_gmse = real
    e, r = statistics.median(engine), statistics.median(ranking)
    print(f"(c) in process, {len(formats)} formats, medians of {repeat}: GMSE engine {e * 1e3:.0f} ms, "
          f"ranking layer alone {r * 1e3:.0f} ms = {r / e * 100:.1f}% of the engine; "
          f"importing gmse_cli.rank on top of the engine {imported * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs of each command")
    parser.add_argument("--law", default=None, help="law file for rank (default: the shipped law)")
    args = parser.parse_args()
    law_arg = str(Path(args.law).resolve()) if args.law else None
    gmse_cmd = ["gmse", "--all", "--json"]
    rank_cmd = ["rank", "--json"] + (["--law", law_arg] if law_arg else [])

    with tempfile.TemporaryDirectory() as tmp:
        root = snapshot_package(Path(tmp))
        # Warm the per-user caches that are not kernels (computed VQ codebooks) once, so the
        # cold runs below differ from the warm ones by numba compilation alone.
        with tempfile.TemporaryDirectory() as cache:
            _run(root, rank_cmd, cache)

        with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
            cold_gmse = _run(root, gmse_cmd, c1)
            cold_rank = _run(root, rank_cmd, c2)
        print(_ratio("(a) cold kernel cache", cold_gmse, cold_rank))

        with tempfile.TemporaryDirectory() as cache:
            _run(root, gmse_cmd, cache)  # compile once into this cache
            warm_gmse, warm_rank = [], []
            for _ in range(args.repeat):  # interleaved, so drifting load hits both alike
                warm_gmse.append(_run(root, gmse_cmd, cache))
                warm_rank.append(_run(root, rank_cmd, cache))

        def best(runs: list[_Timing]) -> _Timing:
            return _Timing(min(r.wall for r in runs), min(r.cpu for r in runs))

        print(_ratio(f"(b) warm kernel cache, best of {args.repeat}", best(warm_gmse), best(warm_rank)))
        _in_process(root, law_arg, args.repeat)


if __name__ == "__main__":
    main()
