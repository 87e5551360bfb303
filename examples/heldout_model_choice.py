"""Which law predicts held-out runs best? Every candidate scored by uscl fit's own held-out refits.

    python examples/heldout_model_choice.py                        # the table
    python examples/heldout_model_choice.py --nested free,prior    # and the nested check

On QuEST's runs (``--data``), each candidate is fitted to the runs inside the law's domain and
scored by cold leave-one-scheme-out and leave-one-GMSE-group-out refits and by one refit on the
smaller models predicting the largest (the scale split; gmse_cli.fit.heldout),
with the runs outside the domain (activations quantized without rotation) predicted by the full
fit. Candidates: the free unified fit (its default erf-shaped curves); the same with the paper's
tanh curves; MAP with the paper's priors (on its tanh curve); E held at 1.3; the quantization
curve's L held at 1; every published constant held (only A and B fitted: the recipe of the
default law, a tanh curve); least squares (Huber delta 1); the two-stage capacity model; and
Kumar's precision law.

Choosing the candidate with the lowest held-out error is itself a fit to the held-out runs, so
its error is optimistic. ``--nested`` measures the selection: for each scheme s inside the
domain, every listed candidate is scored by leave-one-scheme-out on the other schemes only
(refits without s and one more scheme t), the best is chosen, and s is predicted by the chosen
candidate's refit without s. The RMSE of those predictions is the honest error of "pick the
best candidate by held-out error".

``--sparsity-gmse`` overrides the GMSE of the catalog's '2:4' stage, the sparsity QuEST's
FourEight runs map to (0.2084 is QuEST's pair-granular 2:4, measured by Monte Carlo; the
element-wise 2:4 is 0.1325).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli.fit import GmseCache, domain_mask, fit  # noqa: E402
from gmse_cli.fit.capacity_model import capacity_model_fit  # noqa: E402
from gmse_cli.fit.design import group_by_scheme, resolve_curve  # noqa: E402
from gmse_cli.fit.loss_fit import fit_loss_model  # noqa: E402
from gmse_cli.fit.prior import PAPER_PRIOR, resolve_prior  # noqa: E402
from gmse_cli.law import shipped_law  # noqa: E402
from gmse_cli.runs import load_runs  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "quest_runs.json"
PAPER_HELD = {k: v for k, (v, _) in PAPER_PRIOR.items()}

CANDIDATES: dict[str, dict] = {
    "free": {"model": "unified"},
    "tanh": {"model": "unified", "curve": "tanh"},
    "prior": {"model": "unified", "prior": "paper"},
    "E=1.3": {"model": "unified", "fixed": {"E": 1.3}},
    "L=1": {"model": "unified", "fixed": {"quantization.L": 1.0}},
    "paper-held": {"model": "unified", "fixed": PAPER_HELD, "curve": "tanh"},
    "lsq": {"model": "unified", "huber_delta": 1.0},
    "capacity": {"model": "capacity"},
    "kumar": {"model": "kumar"},
}


def gmse_provider(sparsity: float | None):
    base = GmseCache()
    if sparsity is None:
        return base
    return lambda fmt: sparsity if fmt.display_name == "2:4" else base(fmt)


def score(runs, name, gmse, law):
    opts = CANDIDATES[name]
    start = time.perf_counter()
    res = fit(runs, gmse=gmse, base_law=law, profile=False, **opts)
    worst = sorted((e for e in res.heldout_schemes.entries if e.inside and e.rmse is not None),
                   key=lambda e: -e.rmse)[:3]
    scale = "-" if res.heldout_scale_rmse is None else f"{res.heldout_scale_rmse:.4f}"
    print(f"{name:11s} fit {res.fit_error:.4f}  scheme {res.heldout_scheme_rmse:.4f}  group "
          f"{res.heldout_group_rmse:.4f}  largest N {scale}  outside {res.heldout_outside_rmse:.4f}  "
          f"({time.perf_counter() - start:.0f} s)"
          "  worst: " + ", ".join(f"{e.name} {e.rmse:.4f} ({e.bias:+.4f})" for e in worst), flush=True)
    return res


def refitter_for(runs, name, gmse, law, train):
    opts = dict(CANDIDATES[name])
    model = opts.pop("model")
    prior = resolve_prior(opts.pop("prior", None))
    common = dict(delta=opts.pop("huber_delta", 1e-3), bootstrap=0, seed=0, fixed=opts.pop("fixed", None),
                  base_law=law, gmse=gmse, starts=None, loso=False, bootstrap_starts=2, data_files=(),
                  prior=prior, profile=False, progress=False, train=train)
    if model in ("unified", "capacity"):
        common["curve"] = resolve_curve(opts.pop("curve", None), prior)
    if model == "capacity":
        return capacity_model_fit(runs, capacity_delta=1e-4, **common)[1]
    return fit_loss_model(runs, model=model, sensitivity=False, **common).refitter


def nested(runs, names, results, gmse, law):
    """The nested check of the module docstring."""
    inside = domain_mask(runs)
    schemes, of_run = group_by_scheme(runs)
    ins = [j for j in range(len(schemes)) if inside[of_run == j].all()]
    y = np.log([r.loss for r in runs])
    pairs = [(a, b) for i, a in enumerate(ins) for b in ins[i + 1:]]
    trains = np.array([inside & (of_run != a) & (of_run != b) for a, b in pairs])
    inner: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    for name in names:
        start = time.perf_counter()
        refits = refitter_for(runs, name, gmse, law, inside).run(trains)
        pred, ok = refits.pred, refits.ok
        inner[name] = {p: (pred[k] - y) if ok[k] else None for k, p in enumerate(pairs)}
        print(f"  {name}: {len(pairs)} pair refits ({time.perf_counter() - start:.0f} s)", flush=True)
    outer, chosen = [], []
    for s in ins:
        # Candidates that can predict s at all (the capacity model cannot predict its reference),
        # scored on the other schemes every candidate can predict without s.
        able = [n for n in names if all(r.heldout_scheme is not None
                                        for r, j in zip(results[n].residuals, of_run, strict=True) if j == s)]
        others = [t for t in ins if t != s and all(inner[n][(min(s, t), max(s, t))] is not None for n in able)]
        best, best_rmse = None, np.inf
        for name in able:
            errs = [inner[name][(min(s, t), max(s, t))][of_run == t] for t in others]
            rmse = float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))
            if rmse < best_rmse:
                best, best_rmse = name, rmse
        held = np.array([r.heldout_scheme for r, j in zip(results[best].residuals, of_run, strict=True) if j == s])
        outer.append(held)
        chosen.append((schemes[s], best))
    rmse = float(np.sqrt(np.mean(np.concatenate(outer) ** 2)))
    print(f"nested: selection by inner leave-one-scheme-out among {', '.join(names)}: outer RMSE {rmse:.4f} "
          f"over {sum(len(o) for o in outer)} runs")
    for scheme, name in chosen:
        print(f"  without {scheme}: chose {name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sparsity-gmse", type=float, default=None, help="GMSE of the '2:4' stage (QuEST pair 2:4: 0.2084)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, from: " + ", ".join(CANDIDATES))
    ap.add_argument("--nested", default="", help="comma-separated candidates for the nested selection check")
    args = ap.parse_args(argv)
    runs = load_runs(args.data)
    gmse = gmse_provider(args.sparsity_gmse)
    law = shipped_law()
    results = {}
    for name in [c for c in args.candidates.split(",") if c]:
        results[name] = score(runs, name, gmse, law)
    names = [c for c in args.nested.split(",") if c]
    if names:
        for name in names:
            if name not in results:
                results[name] = score(runs, name, gmse, law)
        nested(runs, names, results, gmse, law)
    return 0


if __name__ == "__main__":
    sys.exit(main())
