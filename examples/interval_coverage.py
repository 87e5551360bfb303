"""How often uscl's 95% Monte Carlo intervals cover the exact GMSE.

    python examples/interval_coverage.py                 # 300 seeds x 4 N:M formats, ~3 min
    python examples/interval_coverage.py --seeds 100 --rel-err 3e-3 2:4 4:8

N:M sparsity has an exact GMSE at any row length (no per-row statistic), so each seed's
Monte Carlo estimate (its own sample bank, the default stopping rule) either covers it or not.
Prints, per format, the share covered by the interval uscl reports (Student's t on the batch
count) and by the normal interval it replaced, the spread of (estimate - exact) / std_err
(1 for a well-calibrated standard error) and the batches used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmse_cli.gmse import Z95, SampleBank, exact_gmse  # noqa: E402
from gmse_cli.spec import resolve_format  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("formats", nargs="*", default=["2:4", "4:8", "1:4", "2:4x2"])
    ap.add_argument("--seeds", type=int, default=300, help="independent sample banks per format")
    ap.add_argument("--first-seed", type=int, default=5000)
    ap.add_argument("--rel-err", type=float, default=1e-3)
    args = ap.parse_args(argv)
    print(f"{'format':8} {'covered (t)':>11} {'covered (z)':>11} {'sd of z':>8} {'batches':>8}")
    for name in args.formats:
        fmt = resolve_format(name)
        exact = exact_gmse(fmt)
        t_hits, z_hits, zs, batches = 0, 0, [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            bank = SampleBank(seed=seed)
            est = bank.estimate(fmt, rel_err=args.rel_err)
            t_hits += est.ci_low <= exact <= est.ci_high
            z_hits += abs(est.gmse - exact) <= Z95 * est.std_err
            zs.append((est.gmse - exact) / est.std_err)
            batches.append(est.samples // bank.batch_elements)
        n = args.seeds
        print(f"{name:8} {t_hits / n:11.3f} {z_hits / n:11.3f} {np.std(zs):8.2f} {np.mean(batches):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
