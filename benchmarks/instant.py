"""Benchmark of issue 11, "Instant answers": every target, whole processes, in one run.

Each command runs as a whole process on a snapshot of the package (copied at start, byte-
compiled as `pip install` leaves it), and is reported as seconds (wall, and the child's CPU
time: user + system, which other load on a shared machine disturbs far less) and as a ratio to
`python -c "import numpy"` measured in the same run. "first" runs get fresh caches: an empty
USCL_CACHE_DIR (no GMSE cache, no codebooks) and an empty NUMBA_CACHE_DIR (no compiled
kernels); "warm" runs reuse the caches the first run filled and report the best of --repeat.

Targets (issue 11): first `uscl rank` <= 3 s; warm `uscl rank` <= 0.5 s; `uscl predict int4`
<= 0.4 s; `uscl --help` <= 0.25 s; `uscl gmse int4 mxfp4 nvfp4 nf4 2:4 sparse-50 --rel-err 3e-4
--recompute` at least 4x faster than a straightforward vectorized numpy GMSE of the same
formats at the same sample counts (below, written out in this file and run as its own
process); `uscl gmse --all --recompute` warm under 1.5 s. Also measured: what a first run
costs for formats outside the shipped table (a scalar grid: kernels compiled; a VQ format: its
codebook trained too) and the same command once its GMSE is cached; and, beside `--all
--recompute`, the same command with one batch per format (its fixed costs: what no Monte Carlo
speed-up can remove) and `uscl gmse --all` read from the table.

Run: python benchmarks/instant.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from snapshot import snapshot_package

REPO = Path(__file__).resolve().parents[1]
GMSE_FORMATS = ["int4", "mxfp4", "nvfp4", "nf4", "2:4", "sparse-50"]


class Timing(NamedTuple):
    wall: float
    cpu: float  # user + system of the child


def _env(root: Path, caches: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(root), USCL_CACHE_DIR=str(caches / "uscl"), NUMBA_CACHE_DIR=str(caches / "numba"))
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, *, stdout=subprocess.DEVNULL) -> tuple[Timing, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE if stdout is None else stdout,
                         stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu), res.stdout or ""


def _best(runs: list[Timing]) -> Timing:
    return Timing(min(t.wall for t in runs), min(t.cpu for t in runs))


def _uscl(*args: str) -> list[str]:
    return [sys.executable, "-m", "gmse_cli", *args]


# --------------------------------------------------------------------------------------------
# The numpy baseline: a straightforward vectorized GMSE of the six formats, written from their
# definitions (README, formats/*.toml), independent of gmse_cli. Monte Carlo on rows of 4096
# (a "tensor" of 32 rows, as the engine's batch) for the formats uscl estimates by Monte Carlo,
# at uscl's sample counts; the closed forms (scipy) where uscl uses them.
# --------------------------------------------------------------------------------------------

BASELINE = r'''
import json, sys
import numpy as np
import ml_dtypes
from scipy import integrate, stats

counts = json.loads(sys.argv[1])
ROWS, COLS = 32, 4096
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
GRID = np.concatenate([-E2M1[:0:-1], E2M1])
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0])

def nearest(v, levels):
    mid = (levels[1:] + levels[:-1]) / 2
    return levels[np.searchsorted(mid, v)]

def mxfp4(x):
    b = x.reshape(-1, 32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    scale = np.exp2(np.floor(np.log2(np.maximum(amax, 1e-38))) - 2)
    return (nearest(np.clip(b / scale, -6, 6), GRID) * scale).reshape(x.shape)

def nvfp4(x):
    b = x.reshape(-1, 16)
    amax = np.abs(b).max(axis=1, keepdims=True)
    s_t = np.float32(np.abs(x).max() / (448 * 6))
    stored = (amax / 6 / s_t).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * s_t
    scale = np.where(stored > 0, stored, 1)
    return (nearest(np.clip(b / scale, -6, 6), GRID) * stored).reshape(x.shape)

def nf4(x):
    b = x.reshape(-1, 64)
    amax = np.abs(b).max(axis=1, keepdims=True)
    return (nearest(b / amax, NF4) * amax).reshape(x.shape)

rng = np.random.default_rng(0)
out = {}
for name, fn in (("mxfp4", mxfp4), ("nvfp4", nvfp4), ("nf4", nf4)):
    err = norm = 0.0
    for _ in range(-(-counts[name] // (ROWS * COLS))):
        x = rng.standard_normal((ROWS, COLS), dtype=np.float32)
        y = fn(x)
        err += float(np.sum((y.astype(np.float64) - x) ** 2))
        norm += float(np.sum(x.astype(np.float64) ** 2))
    out[name] = err / norm

# int4: QuEST's midrise grid, 16 levels over [-a, a], a * RMS the optimal clip:
# the Gaussian MSE by quadrature over the cells.
a = 2.5140045914998  # the Gaussian-MSE-optimal clip of 16 midrise levels, in units of RMS
levels = -a + np.arange(16) * (2 * a / 15)
edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
out["int4"] = sum(integrate.quad(lambda t, q=q: (t - q) ** 2 * stats.norm.pdf(t), lo, hi)[0]
                  for q, lo, hi in zip(levels, edges[:-1], edges[1:]))
# sparse-50: keep the larger half of |x| per row: (2 Phi(t) - 1) - 2 t phi(t), t = Phi^-1(3/4)
t = stats.norm.ppf(0.75)
out["sparse-50"] = (2 * stats.norm.cdf(t) - 1) - 2 * t * stats.norm.pdf(t)
# 2:4: drop the two smallest |x| of four; E[sum of the two smallest squares] / 4 by quadrature
# over the joint density of the 2nd order statistic of four |N(0,1)| (half-normal).
f = lambda u: 2 * stats.norm.pdf(u)
F = lambda u: 2 * stats.norm.cdf(u) - 1
second = lambda u: 12 * F(u) * (1 - F(u)) ** 2 * f(u)  # density of the 2nd smallest of 4
below = lambda u: integrate.quad(lambda v: v * v * f(v), 0, u)[0] / F(u) if u > 0 else 0.0
out["2:4"] = integrate.quad(lambda u: (u * u + below(u)) * second(u), 0, np.inf)[0] / 4
print(json.dumps(out))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each warm measurement (best reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = snapshot_package(tmp_path / "pkg", byte_compile=True)
        caches = tmp_path / "caches"
        env = _env(root, caches)
        cwd = tmp_path

        numpy = _best([_run([sys.executable, "-c", "import numpy"], env, cwd)[0] for _ in range(2 * args.repeat)])
        rows: list[tuple[str, Timing, float | None]] = []

        def report(label: str, t: Timing, target: float | None = None) -> None:
            rows.append((label, t, target))

        report("uscl rank, first (fresh caches)", _run(_uscl("rank"), env, cwd)[0], 3.0)
        report("uscl rank, warm", _best([_run(_uscl("rank"), env, cwd)[0] for _ in range(args.repeat)]), 0.5)
        report("uscl predict int4", _best([_run(_uscl("predict", "int4"), env, cwd)[0] for _ in range(args.repeat)]), 0.4)
        report("uscl --help", _best([_run(_uscl("--help"), env, cwd)[0] for _ in range(args.repeat)]), 0.25)
        report("uscl formats", _best([_run(_uscl("formats"), env, cwd)[0] for _ in range(args.repeat)]), None)

        # Formats outside the table: the first run compiles kernels (fresh numba cache) or
        # trains a codebook (fresh uscl cache); the second reads the GMSE from the cache.
        for fmt in ("lm3-g128", "vq4-b1.5"):
            fresh = tmp_path / f"fresh-{fmt}"
            fresh_env = _env(root, fresh)
            report(f"uscl predict {fmt}, first (fresh caches)", _run(_uscl("predict", fmt), fresh_env, cwd)[0])
            report(f"uscl predict {fmt}, again (cached)",
                   _best([_run(_uscl("predict", fmt), fresh_env, cwd)[0] for _ in range(args.repeat)]))

        gmse_args = ["gmse", *GMSE_FORMATS, "--rel-err", "3e-4", "--recompute", "--json"]
        _run(_uscl(*gmse_args), env, cwd)  # kernels compiled into the warm cache
        runs = [_run(_uscl(*gmse_args), env, cwd, stdout=None) for _ in range(args.repeat)]
        ours = _best([t for t, _ in runs])
        result = json.loads(runs[0][1])["results"]
        counts = {r["name"]: r["samples"] for r in result}
        base_runs = [_run([sys.executable, "-c", BASELINE, json.dumps(counts)], env, cwd, stdout=None)
                     for _ in range(max(2, args.repeat // 2))]
        base = _best([t for t, _ in base_runs])
        base_values = json.loads(base_runs[0][1])
        report("uscl gmse <6 formats> --rel-err 3e-4 --recompute", ours)
        report("  numpy baseline, same formats and sample counts", base)

        _run(_uscl("gmse", "--all", "--recompute", "--json"), env, cwd)  # codebooks, kernels
        report("uscl gmse --all --recompute, warm",
               _best([_run(_uscl("gmse", "--all", "--recompute", "--json"), env, cwd)[0] for _ in range(args.repeat)]),
               1.5)
        # What the command costs before sampling: the same work with one batch per Monte Carlo
        # format (imports, numba's start and kernel loads, the quadratures, the writes)...
        floor = ["gmse", "--all", "--recompute", "--json", "--max-samples", "131072"]
        report("  the same, one batch per format (fixed costs)",
               _best([_run(_uscl(*floor), env, cwd)[0] for _ in range(args.repeat)]))
        # ... and with nothing computed: every value read from the shipped table
        report("  uscl gmse --all (the table)",
               _best([_run(_uscl("gmse", "--all", "--json"), env, cwd)[0] for _ in range(args.repeat)]))

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1 / 5 / 15 min) at the end; best of {args.repeat} for warm runs")
    print(f"python -c 'import numpy': wall {numpy.wall:.3f} s, cpu {numpy.cpu:.3f} s (the unit of the ratios)\n")
    print(f"{'command':<52} {'wall s':>7} {'x numpy':>8} {'cpu s':>7} {'x numpy':>8}  target")
    for label, t, target in rows:
        aim = f"<= {target:g} s" if target is not None else ""
        print(f"{label:<52} {t.wall:>7.3f} {t.wall / numpy.wall:>8.1f} {t.cpu:>7.3f} {t.cpu / numpy.cpu:>8.1f}  {aim}")
    print(f"\ngmse speed-up over the numpy baseline: wall {base.wall / ours.wall:.1f}x, cpu {base.cpu / ours.cpu:.1f}x "
          f"(target >= 4x); samples per format: {counts}")
    for r in result:
        print(f"  {r['name']:<10} uscl {r['gmse']:.6g} ({r['gmse_method']}), numpy baseline {base_values[r['name']]:.6g}")


if __name__ == "__main__":
    main()
