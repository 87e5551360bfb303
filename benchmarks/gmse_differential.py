"""Differential check of `uscl gmse` against an independent numpy implementation
(tests/gmse_independent.py) on seeded random formats across the shorthand grammar.

    python benchmarks/gmse_differential.py N SEED [--rel-err 1e-3] [--max-samples 8388608]

Prints one line per format (z = (independent - uscl) / joint standard error; bits/param
against a hand count) and a summary (rms z, max |z|, mismatches). Exact uscl values of
per-row RMS grids are also compared with closed-form quadrature (infinite-row limit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import gmse_independent as gi  # noqa: E402


def generate(n: int, seed: int) -> list[tuple[str, int]]:
    """(spec, row length) pairs that uscl accepts."""
    from gmse_cli.errors import UsclError
    from gmse_cli.spec import parse_shorthand

    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    while len(out) < n:
        spec = gi.random_spec(rng)
        row = int(rng.choice(gi.ROW_LENGTHS))
        try:
            fmt = parse_shorthand(spec)
            for st in fmt.stages:
                st.check_row_length(row)
            gi.parse(spec)
        except (UsclError, ValueError):
            continue
        out.append((spec, row))
    return out


def run_uscl(specs: list[str], row: int, seed: int, rel_err: float, table: bool = False) -> list[dict]:
    cmd = [sys.executable, "-m", "gmse_cli", "gmse", *specs, *([] if table else ["--recompute"]), "--json",
           "--row-length", str(row), "--seed", str(seed), "--rel-err", str(rel_err)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode != 0:
        raise RuntimeError(f"uscl failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout)["results"]


def independent(spec: str, row: int, seed: int, rel_err: float, max_samples: int) -> tuple[float, float, int]:
    """Adaptive Monte Carlo: a pilot, then enough samples for ``rel_err`` (capped)."""
    pilot = min(1 << 20, max_samples)
    g, se = gi.monte_carlo(spec, row, pilot, seed)
    if g == 0 or se / g <= rel_err:
        return g, se, pilot
    want = int(pilot * (se / g / rel_err) ** 2 * 1.1)
    n = min(max(want, pilot), max_samples)
    g, se = gi.monte_carlo(spec, row, n, seed + 1)
    return g, se, n


def exact_reference(spec: str) -> float | None:
    """Closed-form GMSE (infinite rows) for one rms-scaled grid per row or tensor."""
    st = gi.parse(spec).stages
    if len(st) != 1 or not isinstance(st[0], gi.Q):
        return None
    q = st[0]
    if q.rule == "none" and q.grid == "fp":
        return gi.grid_mse(gi.native_levels(q), 1.0)
    if q.rule != "rms" or q.group not in ("row", "tensor") or q.sfmt not in ("fp32",):
        return None
    return gi.grid_mse(gi.native_levels(q), gi.rms_constant(q))


def compare_compressors(pairs: list[tuple[str, int]], seed: int) -> None:
    """uscl's compressor against the independent one on the same Gaussian tensor (8 rows)."""
    from gmse_cli.compress import compress

    rng = np.random.default_rng(seed)
    worst = []
    for spec, row in pairs:
        x = rng.standard_normal((8, row), dtype=np.float32)
        ours = gi.compress(gi.parse(spec), x.astype(np.float64)[None])[0]
        theirs = np.asarray(compress(spec, x), dtype=np.float64)
        diff = np.abs(ours - theirs)
        far = int(np.sum(diff > 1e-5 * max(1.0, float(np.max(np.abs(x))))))
        worst.append((far, spec, row, float(diff.max())))
        flag = "  <-- CHECK" if far > 0 else ""
        print(f"{spec:52s} L={row:5d} differing {far:6d}/{x.size} max|diff| {diff.max():.3g}{flag}", flush=True)
    bad = [w for w in worst if w[0] > 0]
    print(f"# {len(pairs)} formats compared element by element; {len(bad)} differ beyond float32 rounding")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("--rel-err", type=float, default=1e-3)
    ap.add_argument("--max-samples", type=int, default=1 << 22)
    ap.add_argument("--specs", nargs="*", help="explicit specs (row 4096) instead of generated ones")
    ap.add_argument("--compressors", action="store_true", help="compare compressor outputs, not GMSEs")
    ap.add_argument("--table", action="store_true", help="against the shipped table (no --recompute)")
    ap.add_argument("--catalog", action="store_true", help="every scalar and sparsity catalog format")
    args = ap.parse_args()
    if args.catalog:
        from gmse_cli.spec import catalog

        args.specs = [n for n, f in catalog().items() if not any(st.kind == "vq" for st in f.stages)]
    pairs = [(s, 4096) for s in args.specs] if args.specs else generate(args.n, args.seed)
    if args.compressors:
        compare_compressors(pairs, args.seed)
        return
    zs, bad = [], []
    for i, (spec, row) in enumerate(pairs):
        # a seed of its own for each format on both sides: the z values are independent
        # (one uscl invocation shares its sample bank across formats)
        seed = args.seed * 100_000 + i
        r = run_uscl([spec], row, seed, args.rel_err, args.table)[0]
        g, se, n = independent(spec, row, 2 * seed + 10**9, args.rel_err, args.max_samples)
        u, use = r["gmse"], r["gmse_std_err"]
        z = (g - u) / math.sqrt(se**2 + use**2) if se + use > 0 else 0.0
        bits = gi.bits_per_param(spec, row)
        bits_ok = abs(bits - r["bits_per_param"]) < 1e-9 * max(1, bits)
        ex = exact_reference(spec) if r["gmse_method"] == "exact" and row >= 4096 else None
        ex_txt = f" quad {ex:.10g} rel {(u - ex) / ex:+.1e}" if ex else ""
        zs.append(z)
        flag = "" if abs(z) < 4 and bits_ok and (ex is None or abs(u - ex) < 1e-9 * ex) else "  <-- CHECK"
        if flag:
            bad.append(spec)
        print(f"{spec:48s} L={row:5d} {r['gmse_method']:11s} uscl {u:.6g}±{use:.2g} mine {g:.6g}±{se:.2g} "
              f"(n={n}) z={z:+.2f} bits {r['bits_per_param']:.6f}/{bits:.6f}{ex_txt}{flag}", flush=True)
    z = np.array(zs)
    kept = np.abs(z) < 10
    print(f"# without |z| >= 10: rms z {math.sqrt(np.mean(z[kept] ** 2)):.3f} over {int(kept.sum())}")
    print(f"# {len(z)} formats: rms z {math.sqrt(np.mean(z**2)):.3f}, mean {z.mean():+.3f}, "
          f"max |z| {np.max(np.abs(z)):.2f}, |z|>3: {int(np.sum(np.abs(z) > 3))}; flagged: {bad}")


if __name__ == "__main__":
    main()
