"""How far a per-row statistic's infinite-row limit is from the real compressor on finite rows.

    python examples/finite_rows.py                       # the default formats, ~3 min on 2 cores
    python examples/finite_rows.py int4 sparse-50 --rows 64 256 4096 --rel-err 3e-4

uscl's exact GMSE of a grid with an RMS scale per row, or of magnitude pruning per row, is the
infinite-row limit (the paper's definition). The real compressor on rows of L entries differs
by about c / L relative. For each format and row length this prints the Monte Carlo GMSE of
the real compressor relative to the limit, its standard error and c = L x (relative
difference). uscl uses the limit by default only for rows of at least 4096
(gmse_cli.gmse.exact.EXACT_MIN_ROW_LENGTH) and runs the real compressor on shorter rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmse_cli.gmse import estimate_gmse, exact_gmse  # noqa: E402
from gmse_cli.spec import resolve_format  # noqa: E402

DEFAULT = ["int1", "int2", "int3", "int4", "int8", "fp4", "fp8-e4m3", "sparse-10", "sparse-30", "sparse-50", "sparse-90"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("formats", nargs="*", default=DEFAULT)
    ap.add_argument("--rows", type=int, nargs="+", default=[64, 256, 4096], help="row lengths")
    ap.add_argument("--rel-err", type=float, default=3e-4, help="Monte Carlo relative standard error")
    args = ap.parse_args(argv)
    print(f"{'format':10} {'limit':>10}" + "".join(f" {'L=' + str(L) + ': rel. diff +- se':>26} {'c':>6}" for L in args.rows))
    for name in args.formats:
        fmt = resolve_format(name)
        limit = exact_gmse(fmt)
        line = f"{name:10} {limit:10.4g}"
        for L in args.rows:
            (mc,) = estimate_gmse([fmt], method="monte-carlo", row_length=L, rel_err=args.rel_err)
            rel = mc.gmse / limit - 1
            line += f" {rel:+17.2e} +- {mc.std_err / limit:.1e} {rel * L:+6.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
