"""How often uscl fit's 95% intervals, and predict's from the fitted law, cover a known truth.

    python examples/fit_coverage.py                          # 50 datasets, Huber delta 1e-3, ~6 min
    python examples/fit_coverage.py --reps 50 --huber-delta 1
    python examples/fit_coverage.py --reps 20 --bootstrap 50 --sigma 0.002
    python examples/fit_coverage.py --dense --reps 100 --bootstrap 0   # ~3 min; --huber-delta 1 too

Each dataset is drawn from a known unified law with the shipped default's constants (A 15.45,
alpha 0.13, B 352.6, beta 0.33, E 1.3; quantization curve L 1, F 0.41, C 1.39): 7 weight-only
schemes (bf16, int8, int6, int5, int4, int3, int2) x 5 model sizes (30M-480M) x 3 tokens per
parameter (25, 50, 100), 105 runs, each loss times exp(N(0, sigma^2)). The law holds exactly
(no capacity drift), every run is inside its domain, and the GMSEs the fit reads are the ones
the truth was drawn with. Each dataset is fitted (``--model unified``, ``--bootstrap K``), and
the fit, written as a law (``to_law``: its replicates as joint draws), predicts four (format,
N, D/N) points, one far beyond the fitted sizes (int4 at 7B, 20 tokens per parameter).

Prints, per quantity, how many of the datasets' 95% intervals cover the truth (a binomial
share: with 50 datasets its own 95% range is about +/- 6 points), and the median interval width
over 3.92 x the spread of the point estimates across datasets (1 for a normal interval of the
right width): the bootstrap and profile intervals of each constant, each scheme's capacity, the
drift slopes (truth 0), and predict's capacity, loss and loss difference from the dense model.

``--dense`` draws from a known dense law instead (A 400, alpha 0.34, B 2000, beta 0.37, E 1.8;
8 sizes from 20M to 2B x 5 tokens per parameter, 5-100; noise 1% unless --sigma), fits
``--model dense`` and counts the constants' intervals only.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmse_cli import predict  # noqa: E402
from gmse_cli.fit import GmseCache, fit  # noqa: E402
from gmse_cli.runs import Run  # noqa: E402
from gmse_cli.spec import resolve_format  # noqa: E402

LAW = {"A": 15.45, "alpha": 0.13, "B": 352.6, "beta": 0.33, "E": 1.3}
CURVE = {"L": 1.0, "F": 0.41, "C": 1.39}
SCHEMES = ("bf16", "int8", "int6", "int5", "int4", "int3", "int2")
SIZES = (30e6, 60e6, 120e6, 240e6, 480e6)
TOKENS_PER_PARAM = (25, 50, 100)
DENSE_LAW = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37, "E": 1.8}
DENSE_SIZES = tuple(np.geomspace(2e7, 2e9, 8))
DENSE_TOKENS_PER_PARAM = (5, 10, 20, 50, 100)
POINTS = (("int4", 200e6, 100), ("int3", 100e6, 50), ("int4", 7e9, 20), ("int2", 2e9, 100))


def true_rho(gmse: float) -> float:
    return CURVE["L"] * math.tanh(CURVE["F"] * math.log(1 / gmse) / math.log(4)) ** CURVE["C"]


def true_loss(N: float, D: float, rho: float) -> float:
    return LAW["A"] * (N * rho) ** -LAW["alpha"] + LAW["B"] * D ** -LAW["beta"] + LAW["E"]


def draw_runs(rng: np.random.Generator, gmse: dict[str, float], sigma: float) -> list[Run]:
    return [Run(scheme=s, weights=s, N=N, D=N * t,
                loss=true_loss(N, N * t, true_rho(gmse[s])) * math.exp(rng.normal(0.0, sigma)))
            for s in SCHEMES for N in SIZES for t in TOKENS_PER_PARAM]


class Tally:
    """Per quantity: hits, interval widths and point estimates over the datasets."""

    def __init__(self):
        self.rows: dict[str, list[tuple[bool, float, float]]] = {}

    def add(self, key: str, truth: float, value: float, low: float | None, high: float | None) -> None:
        if low is not None and high is not None:
            self.rows.setdefault(key, []).append((low <= truth <= high, high - low, value))

    def print(self) -> None:
        print(f"{'interval':40} {'covered':>9} {'share':>6} {'width / (3.92 sd)':>18}")
        for key, rows in self.rows.items():
            hits, widths, values = zip(*rows, strict=True)
            spread = float(np.std(values))
            ratio = float(np.median(widths)) / (3.92 * spread) if spread > 0 else math.nan
            print(f"{key:40} {sum(hits):4}/{len(hits):<4} {np.mean(hits):6.2f} {ratio:18.2f}")


def draw_dense_runs(rng: np.random.Generator, sigma: float) -> list[Run]:
    law = DENSE_LAW
    return [Run(scheme="bf16", weights="bf16", N=N, D=N * t,
                loss=(law["A"] * N ** -law["alpha"] + law["B"] * (N * t) ** -law["beta"] + law["E"])
                * math.exp(rng.normal(0.0, sigma)))
            for N in DENSE_SIZES for t in DENSE_TOKENS_PER_PARAM]


def tally_constants(tally: Tally, res, truths: dict[str, float]) -> None:
    for key, truth in truths.items():
        c = res.constants[key]
        if c.fixed:
            continue
        tally.add(f"{key} bootstrap", truth, c.value, c.low, c.high)
        tally.add(f"{key} profile", truth, c.value, c.profile_low, c.profile_high)


def tally_fit(tally: Tally, res, gmse: dict[str, float]) -> None:
    tally_constants(tally, res, LAW | {f"quantization.{k}": v for k, v in CURVE.items()})
    for cap in res.capacities:
        tally.add(f"rho {cap.scheme} bootstrap", true_rho(gmse[cap.scheme]), cap.rho, cap.rho_low, cap.rho_high)
    for slope in res.drift.slopes if res.drift else ():
        tally.add(f"drift on {slope.regressor} (truth 0)", 0.0, slope.slope, slope.low, slope.high)


def tally_predictions(tally: Tally, res, gmse: dict[str, float], seed: int) -> None:
    law = res.to_law("synthetic")
    for fmt, N, tpp in POINTS:
        p = predict(fmt, params=N, tokens=N * tpp, law=law, seed=seed)
        rho = true_rho(gmse[fmt])
        loss = true_loss(N, N * tpp, rho)
        where = f"{fmt} {N:.0e} {tpp}x"
        tally.add(f"predict rho {where}", rho, p.rho, p.rho_low, p.rho_high)
        tally.add(f"predict loss {where}", loss, p.predicted_loss, p.loss_low, p.loss_high)
        tally.add(f"predict loss - dense {where}", loss - true_loss(N, N * tpp, 1.0), p.delta_loss_vs_bf16,
                  p.delta_loss_low, p.delta_loss_high)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=50, help="synthetic datasets")
    ap.add_argument("--dense", action="store_true", help="a known dense law (see above), not a unified one")
    ap.add_argument("--sigma", type=float, default=None,
                    help="noise on log-loss (default 0.005, QuEST's fit error 0.004; 0.01 with --dense)")
    ap.add_argument("--huber-delta", type=float, default=1e-3)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.sigma is None:
        args.sigma = 0.01 if args.dense else 0.005
    if args.reps < 1 or not (args.bootstrap >= 2 or args.dense and args.bootstrap == 0) or not args.sigma > 0:
        ap.error("need --reps >= 1, --bootstrap >= 2 (or 0 with --dense) and --sigma > 0")
    if args.dense:
        tally = Tally()
        for rep in range(args.reps):
            runs = draw_dense_runs(np.random.default_rng(args.first_seed + rep), args.sigma)
            res = fit(runs, model="dense", huber_delta=args.huber_delta, bootstrap=args.bootstrap, seed=rep,
                      loso=False)
            tally_constants(tally, res, DENSE_LAW)
            print(f"dataset {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
        tally.print()
        return 0
    cache = GmseCache(seed=0)
    gmse = {s: cache(resolve_format(s)) for s in SCHEMES}
    held = GmseCache(values=gmse)  # the fit reads the GMSEs the truth used
    tally = Tally()
    for rep in range(args.reps):
        runs = draw_runs(np.random.default_rng(args.first_seed + rep), gmse, args.sigma)
        res = fit(runs, model="unified", curve="tanh", huber_delta=args.huber_delta, bootstrap=args.bootstrap, seed=rep,
                  gmse=held, loso=False)
        tally_fit(tally, res, gmse)
        tally_predictions(tally, res, gmse, rep)
        print(f"dataset {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
    tally.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
