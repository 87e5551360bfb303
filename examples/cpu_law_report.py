"""Our own evidence: the unified law fitted on the CPU sweep, its held-out error per scheme
beside the seed noise, in one table.

    python examples/cpu_law_report.py                               # the committed results
    python examples/cpu_law_report.py runs.jsonl --json             # your own sweep

The results file is what `uscl train train/cpu-law.toml --out examples/cpu-law.jsonl` wrote
(three model sizes, several weight and weight+activation formats, seed 1 repeated on some
configurations). The fit is `uscl fit RESULTS --model unified`: the runs outside the law's
domain (activations quantized without a rotation) are predicted, not fitted. Held-out error:
each scheme's runs predicted by a cold refit without them (`FitResult.heldout_schemes`).

Seed noise: for every configuration trained with seeds 0 and 1, d = log L(seed 1) - log L(seed
0); one run's noise is then sqrt(mean d^2 / 2) (the two seeds are independent draws). A held-out
RMSE near that noise says the law predicts the scheme as well as a rerun would; well above it,
the law misses something.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli.fit import fit  # noqa: E402
from gmse_cli.law import load_law  # noqa: E402
from gmse_cli.runs import load_runs  # noqa: E402

DEFAULT_RESULTS = REPO / "examples" / "cpu-law.jsonl"


def seed_pairs(runs) -> dict[str, list[float]]:
    """Per scheme, the log-loss differences seed 1 - seed 0 of configurations run with both."""
    by_config: dict[tuple[str, float, float], dict[int, float]] = {}
    for r in runs:
        by_config.setdefault((r.scheme, r.N, r.D), {})[int(r.meta.get("seed", 0))] = r.loss
    pairs: dict[str, list[float]] = {}
    for (scheme, _, _), seeds in by_config.items():
        if 0 in seeds and 1 in seeds:
            pairs.setdefault(scheme, []).append(math.log(seeds[1]) - math.log(seeds[0]))
    return pairs


def noise(diffs: list[float]) -> float:
    """One run's log-loss noise from paired seed differences."""
    return math.sqrt(sum(d * d for d in diffs) / len(diffs) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS, help="uscl train results (JSON lines)")
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args()

    runs = load_runs(args.results)
    # One distinct sparsity GMSE cannot fit a curve: that family is held at the shipped law.
    result = fit(runs, model="unified", base_law=load_law(None), data_files=[str(args.results)], progress=True)
    pairs = seed_pairs(runs)
    pooled = noise([d for ds in pairs.values() for d in ds]) if pairs else None
    rows = []
    for e in result.heldout_schemes.entries:
        scheme = e.schemes[0]
        rows.append({
            "scheme": e.name, "runs": e.n_runs, "inside_domain": e.inside, "heldout_rmse": e.rmse,
            "heldout_bias": e.bias, "rho_full": e.rho_full, "rho_heldout": e.rho_heldout,
            "seed_pairs": len(pairs.get(scheme, [])),
            "seed_noise": noise(pairs[scheme]) if scheme in pairs else None,
        })
    constants = {k: c.value for k, c in result.constants.items()}
    if args.json:
        print(json.dumps({
            "results": str(args.results), "n_runs": result.n_runs, "fit_error": result.fit_error,
            "heldout_scheme_rmse": result.heldout_schemes.rmse_inside,
            "heldout_outside_rmse": result.heldout_schemes.rmse_outside, "seed_noise": pooled,
            "constants": constants, "schemes": rows,
        }, indent=2))
        return

    def num(x, fmt=".4f"):
        return "-" if x is None else format(x, fmt)

    print(f"{args.results.name}: {result.n_runs} runs, unified fit error {result.fit_error:.4f} "
          f"(RMSE of log-loss over the fitted runs)")
    print("constants: " + ", ".join(f"{k} {v:.4g}" for k, v in constants.items()))
    print(f"held out (cold leave-one-scheme-out): inside the domain {num(result.heldout_schemes.rmse_inside)}, "
          f"outside {num(result.heldout_schemes.rmse_outside)}; seed noise per run {num(pooled)} "
          f"({sum(len(d) for d in pairs.values())} seed pairs)")
    print()
    print(f"{'scheme':<28} {'runs':>4} {'domain':>7} {'held-out RMSE':>13} {'bias':>8} "
          f"{'rho (all)':>9} {'rho (held out)':>14} {'seed noise':>10}")
    for r in rows:
        print(f"{r['scheme']:<28} {r['runs']:>4} {'in' if r['inside_domain'] else 'out':>7} "
              f"{num(r['heldout_rmse']):>13} {num(r['heldout_bias'], '+.4f'):>8} {num(r['rho_full'], '.3f'):>9} "
              f"{num(r['rho_heldout'], '.3f'):>14} "
              f"{num(r['seed_noise']) + (' ({})'.format(r['seed_pairs']) if r['seed_pairs'] else ''):>10}")


if __name__ == "__main__":
    main()
