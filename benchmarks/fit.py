"""Benchmark `uscl fit` against a straightforward scipy implementation of the same fits.

    python benchmarks/fit.py                    # needs ../shared/data (Chinchilla + QuEST runs)
    python benchmarks/fit.py --baseline-starts 5

Measured in one run, on the same machine, against a baseline measured in the same run:

1. Dense fit of the Chinchilla points (5 worst dropped) from Besiroglu et al.'s grid of 4,500
   starts: ours (batched L-BFGS, vectorized objective, analytic gradients, numba) versus scipy's
   L-BFGS-B with finite-difference gradients and an objective that loops over points in Python.
   The baseline runs a random subset of the starts; time per start is compared, and its total is
   extrapolated to the full grid. Targets: ours < 20 s, >= 10x the baseline.
2. 1,000 bootstrap refits of that dense fit. Target: < 2 minutes.
3. The unified fit on QuEST's 104 runs (its 486 starts) versus the same kind of baseline.

Numba compilation is done before timing (it is cached on disk after the first run anyway) and
reported separately. The baseline's best objective is printed beside ours as a sanity check
that both solve the same problem.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli import fit as F  # noqa: E402
from gmse_cli.fit.params import LAW_INTERNAL  # noqa: E402
from gmse_cli.fit.parts import StagePart  # noqa: E402
from gmse_cli.fit.problem import coarse_law_grid, expand_starts  # noqa: E402
from gmse_cli.law import load_law  # noqa: E402
from gmse_cli.runs import exclude_worst, load_csv, load_quest_runs  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _huber(r: float, delta: float) -> float:
    a = abs(r)
    return 0.5 * r * r if a <= delta else delta * (a - 0.5 * delta)


def baseline_dense_objective(p, N, D, loss, delta=1e-3):
    """The same objective written the plain way: a Python loop over points."""
    a, alpha, b, beta, e = p
    total = 0.0
    for n, d, y in zip(N, D, loss, strict=True):
        t1, t2 = a - alpha * math.log(n), b - beta * math.log(d)
        m = max(t1, t2, e)
        pred = m + math.log(math.exp(t1 - m) + math.exp(t2 - m) + math.exp(e - m))
        total += _huber(pred - math.log(y), delta)
    return total


def baseline_unified_objective(p, N, D, loss, stages, families, delta=1e-3):
    """Unified law, plain Python: rho of each run = product over its stages of L tanh(F bits)^C."""
    a, alpha, b, beta, e = p[:5]
    curves = {fam: p[5 + 3 * j : 8 + 3 * j] for j, fam in enumerate(families)}
    total = 0.0
    for n, d, y, st in zip(N, D, loss, stages, strict=True):
        logrho = 0.0
        for fam, g in st:
            logL, logF, logC = curves[fam]
            bits = -math.log(g) / math.log(4.0)
            logrho += logL + math.exp(logC) * math.log(max(math.tanh(math.exp(logF) * bits), 1e-300))
        t1, t2 = a - alpha * (math.log(n) + logrho), b - beta * math.log(d)
        m = max(t1, t2, e)
        pred = m + math.log(math.exp(t1 - m) + math.exp(t2 - m) + math.exp(e - m))
        total += _huber(pred - math.log(y), delta)
    return total


def run_baseline(objective, starts, args, fixed=None):
    """scipy L-BFGS-B with finite-difference gradients from each start; (seconds per start, best f)."""
    fixed = fixed or {}
    free = [j for j in range(starts.shape[1]) if j not in fixed]

    def full(x):
        p = np.empty(starts.shape[1])
        p[free] = x
        for j, v in fixed.items():
            p[j] = v
        return p

    best = math.inf
    t0 = time.perf_counter()
    for x0 in starts:
        # The objective's scale is ~1e-3; scale it to ~1 so scipy's absolute tolerances mean something.
        res = minimize(lambda x: 1e3 * objective(full(x), *args), x0[free], method="L-BFGS-B")
        best = min(best, res.fun / 1e3)
    return (time.perf_counter() - t0) / len(starts), best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="benchmark uscl fit against a plain scipy baseline")
    ap.add_argument("--baseline-starts", type=int, default=8, help="grid starts the baseline runs (random subset)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (DATA / "chinchilla_epoch_extracted.csv").is_file():
        print(f"error: {DATA} with the Chinchilla and QuEST runs is needed", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)

    t = time.perf_counter()
    tiny = exclude_worst(load_csv(DATA / "chinchilla_epoch_extracted.csv"), 5)[:40]
    F.fit(tiny, model="dense", starts=F.epoch_grid()[:8])
    compile_s = time.perf_counter() - t

    # 1. dense, Epoch grid
    runs = exclude_worst(load_csv(DATA / "chinchilla_epoch_extracted.csv"), 5)
    t = time.perf_counter()
    res = F.fit(runs, model="dense")
    ours_dense = time.perf_counter() - t
    grid = F.epoch_grid()
    N, D, loss = (np.array([getattr(r, k) for r in runs]) for k in ("N", "D", "loss"))
    sub = grid[rng.choice(len(grid), size=args.baseline_starts, replace=False)]
    base_per_start, base_best = run_baseline(baseline_dense_objective, sub, (N, D, loss))
    ours_per_start = ours_dense / len(grid)

    # 2. bootstrap
    t = time.perf_counter()
    boot = F.fit(runs, model="dense", bootstrap=args.bootstrap, seed=args.seed)
    boot_s = time.perf_counter() - t - ours_dense

    # 3. unified on QuEST
    quest = load_quest_runs(DATA / "quest_runs.json")
    gmse = F.GmseCache(seed=args.seed)
    law = load_law()
    stages = [F.run_stages(r, gmse) for r in quest]
    F.fit(quest, model="unified", curve="tanh", base_law=law, gmse=gmse, loso=False, starts=coarse_law_grid()[:2])
    t = time.perf_counter()
    uni = F.fit(quest, model="unified", curve="tanh", base_law=law, gmse=gmse, loso=False)
    ours_uni = time.perf_counter() - t
    families = sorted({f.value for st in stages for f, _ in st})
    held = {5 + 3 * j + i: math.log(getattr(law.families[fam], k).value)
            for j, fam in enumerate(families) if fam == "sparsity" for i, k in enumerate("LFC")}
    ustarts = expand_starts("unified", coarse_law_grid(), StagePart(families, np.zeros(0, int), np.zeros(0),
                                                                    np.zeros((0, len(quest)))),
                            list(LAW_INTERNAL) + [f"{f}.log{k}" for f in families for k in "LFC"])
    usub = ustarts[rng.choice(len(ustarts), size=max(2, args.baseline_starts // 2), replace=False)]
    qN, qD, qloss = (np.array([getattr(r, k) for r in quest]) for k in ("N", "D", "loss"))
    ustages = [[(f.value, g) for f, g in st] for st in stages]
    ubase_per_start, ubase_best = run_baseline(baseline_unified_objective, usub, (qN, qD, qloss, ustages, families),
                                               fixed=held)
    ours_uni_per_start = ours_uni / uni.starts

    print(f"numba compile + first call: {compile_s:.1f} s (excluded below; cached on disk afterwards)")
    print()
    print("dense fit, Chinchilla (240 points), Besiroglu grid")
    print(f"  ours:     {len(grid)} starts in {ours_dense:.2f} s  ({1e3 * ours_per_start:.2f} ms/start), "
          f"objective {res.objective:.10g}")
    print(f"  baseline: {len(sub)} starts at {1e3 * base_per_start:.1f} ms/start (scipy L-BFGS-B, finite differences, "
          f"Python loop), best objective {base_best:.10g}")
    print(f"  baseline extrapolated to {len(grid)} starts: {base_per_start * len(grid):.0f} s")
    print(f"  speed-up per start: {base_per_start / ours_per_start:.0f}x   (target >= 10x; ours < 20 s: "
          f"{'yes' if ours_dense < 20 else 'NO'})")
    print()
    print(f"dense bootstrap: {args.bootstrap} refits in {boot_s:.2f} s ({1e3 * boot_s / args.bootstrap:.1f} ms/refit; "
          f"target < 120 s: {'yes' if boot_s < 120 else 'NO'}); alpha = {boot.alpha:.4f} "
          f"[{boot.constants['alpha'].low:.4f}, {boot.constants['alpha'].high:.4f}]")
    print()
    print(f"unified fit, QuEST ({len(quest)} runs, {len(families)} families)")
    print(f"  ours:     {uni.starts} starts in {ours_uni:.2f} s  ({1e3 * ours_uni_per_start:.2f} ms/start), "
          f"objective {uni.objective:.10g}")
    print(f"  baseline: {len(usub)} starts at {1e3 * ubase_per_start:.0f} ms/start, best objective {ubase_best:.10g}")
    print(f"  speed-up per start: {ubase_per_start / ours_uni_per_start:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
