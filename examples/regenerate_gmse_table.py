"""Regenerate the shipped GMSE table, gmse_cli/gmse/table.json.

    python examples/regenerate_gmse_table.py                  # rel-err 1e-4, seed 0, rows of 4096
    python examples/regenerate_gmse_table.py --rel-err 3e-4 --out /tmp/table.json

Every catalog format and every stage of its composites (rank multiplies per-stage capacities):
exact quadrature where it exists, otherwise Monte Carlo on one shared sample bank to the
target relative standard error (at most --max-samples Gaussian elements per format). Each
entry is keyed by its format's stages, the row length and the compressors' algorithm versions
(gmse_cli.gmse.stored), so a later change of a format or a compressor simply misses it; the
file's provenance records this command, the seed, the row length, the target precision, the
uscl version and every compressor's algorithm version. On 2 cores at 1e-4 this takes several
minutes (the VQ formats most of it).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli.gmse.table import build_table, table_path, write_table  # noqa: E402
from gmse_cli.spec import DEFAULT_ROW_LENGTH  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rel-err", type=float, default=1e-4, help="target relative standard error (Monte Carlo)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shared sample bank")
    ap.add_argument("--row-length", type=int, default=DEFAULT_ROW_LENGTH, help="row length of the Gaussian tensors")
    ap.add_argument("--max-samples", type=int, default=1 << 31, help="Gaussian elements per format at most")
    ap.add_argument("--out", type=Path, default=None, help=f"where to write (default: {table_path()})")
    args = ap.parse_args(argv)

    command = " ".join(["python examples/regenerate_gmse_table.py", *map(shlex.quote, argv or sys.argv[1:])])
    start = time.perf_counter()
    table = build_table(
        rel_err=args.rel_err, seed=args.seed, row_length=args.row_length, max_samples=args.max_samples,
        command=command, progress=True,
    )
    path = write_table(table, args.out)
    seconds = time.perf_counter() - start
    worst = max((e for e in table.entries if e.method == "monte-carlo"), key=lambda e: e.std_err / e.gmse, default=None)
    print(f"wrote {len(table.entries)} entries to {path} in {seconds:.0f} s")
    if worst is not None:
        print(f"least precise Monte Carlo entry: {worst.name}, relative standard error {worst.std_err / worst.gmse:.2e} "
              f"from {worst.samples:,} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
