"""Regenerate the published evidence shipped beside the law: gmse_cli.law.domain.UNROTATED_EVIDENCE.

    python examples/unrotated_evidence.py            # print the rows to paste into domain.py
    python examples/unrotated_evidence.py --check    # compare with the shipped rows

One decoupled fit of QuEST's public runs (one free capacity per scheme, bf16 pinned at 1; Huber
on log-loss, delta 1e-3; 200 bootstrap refits resampling runs within schemes, seed 0): for each
unrotated weights x activations scheme W:intb A:intb, its capacity with the 95% bootstrap
interval, beside the capacity of W:had128+intb A:had128+intb, the same grids behind a 128-block
Hadamard rotation. The decoupled fit assumes nothing about GMSE, so these are what the runs
themselves say about the schemes the law cannot see.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli.fit import fit  # noqa: E402
from gmse_cli.law import UNROTATED_EVIDENCE, EvidenceRow  # noqa: E402
from gmse_cli.runs import load_quest_runs  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "quest_runs.json"
BOOTSTRAP = 200


def evidence(data: Path, bootstrap: int = BOOTSTRAP, seed: int = 0) -> list[EvidenceRow]:
    res = fit(load_quest_runs(data), model="decoupled", bootstrap=bootstrap, seed=seed)
    by_name = {c.scheme: c for c in res.capacities}
    rows = []
    for bits in (1, 2, 3, 4, 8):
        plain, rotated = by_name.get(f"W:int{bits} A:int{bits}"), by_name.get(f"W:had128+int{bits} A:had128+int{bits}")
        if plain is None or rotated is None:
            continue
        rows.append(EvidenceRow(f"int{bits}", f"int{bits}", bits, round(plain.rho, 4), round(plain.rho_low, 4),
                                round(plain.rho_high, 4), round(rotated.rho, 4), plain.n_runs))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="QuEST quest_runs.json")
    ap.add_argument("--check", action="store_true", help="compare with the shipped rows instead of printing them")
    args = ap.parse_args(argv)
    rows = evidence(args.data)
    for row in rows:
        print(f"    EvidenceRow({row.weights!r}, {row.activations!r}, {row.bits}, {row.rho:.4f}, {row.rho_low:.4f}, "
              f"{row.rho_high:.4f}, {row.rho_rotated:.4f}, {row.n_runs}),")
    if not args.check:
        return 0
    # Bootstrap percentiles can move in the last digit across machines; the point fit must not.
    same = len(rows) == len(UNROTATED_EVIDENCE) and all(
        a.bits == b.bits and a.n_runs == b.n_runs
        and all(math.isclose(x, y, abs_tol=2e-4) for x, y in zip(a[3:7], b[3:7], strict=True))
        for a, b in zip(rows, UNROTATED_EVIDENCE, strict=True))
    print("check: " + ("the shipped rows" if same else "DIFFERENT from the shipped rows"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
