"""The paper's headline comparison (FP4 vs INT4) and four more of uscl's own, with the Python API.

    python examples/headline_comparisons.py [--law FILE] [--params 200e6] [--tokens TOKENS]

For each group the law answers: which format keeps more of the model (capacity rho), and which
needs less memory to match the dense bf16 model (N / rho parameters at its bits per parameter),
and how sure it is: the share of the law's Monte Carlo draws in which each format wins. Those
shares, not overlapping marginal intervals, are the right reading: formats of one family share
a curve, so their order follows their GMSE in every draw. Every number comes from
:func:`gmse_cli.rank.compare` and the shipped law (or --law).

1. FP4 vs INT4: same 4 bits; QuEST's RMS-scaled INT4 grid has the lower GMSE (0.0115 vs
   0.0127 in paper.md), so FP4 brings no gain -- the paper's headline claim.
2. NF4 vs INT4: bitsandbytes' NormalFloat (absmax per 64 + its fp32 scales) against INT4.
3. MXFP4 vs NVFP4: power-of-two scales per 32 against E4M3 scales per 16.
4. 2:4 sparsity + INT4 (2.65 bits) against dense INT2 and INT3 around the same storage.
5. Weight-only against weights + activations: INT4 weights alone, with INT8 or INT4
   activations (capacities multiply).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmse_cli.gmse import SampleBank  # noqa: E402
from gmse_cli.rank import compare  # noqa: E402
from gmse_cli.spec import Scheme, resolve_format  # noqa: E402

COMPARISONS: list[tuple[str, list[str | tuple[str, str]]]] = [
    ("FP4 vs INT4", ["fp4", "int4"]),
    ("NF4 vs INT4", ["nf4", "int4"]),
    ("MXFP4 vs NVFP4", ["mxfp4", "nvfp4"]),
    ("2:4 + INT4 vs INT2 / INT3", ["2:4+int4", "int2", "int3"]),
    ("weight-only vs weights + activations", ["int4", ("int4", "int8"), ("int4", "int4")]),
]


def _scheme(item: str | tuple[str, str]) -> Scheme:
    if isinstance(item, tuple):
        return Scheme(weights=resolve_format(item[0]), activations=resolve_format(item[1]))
    return Scheme(weights=resolve_format(item))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--law", default=None, help="law file or shipped name (default: paper-llama-c4)")
    parser.add_argument("--params", type=float, default=200e6)
    parser.add_argument("--tokens", type=float, default=None, help="default: 100 tokens per parameter")
    args = parser.parse_args()

    header = (f"  {'format':<16} {'bits':>6} {'GMSE':>8} {'rho [interval]':>22} {'loss - bf16':>11} "
              f"{'N/rho':>8} {'memory':>9} {'P(most rho)':>11} {'P(least mem)':>12}")
    bank = SampleBank(seed=0)  # one Gaussian bank for every comparison (common random numbers)
    for title, items in COMPARISONS:
        result = compare([_scheme(i) for i in items], law=args.law, params=args.params, tokens=args.tokens, bank=bank)
        first = result.rows[0]
        print(f"{title}  (law {first.law}, N = {first.params:.3g}, D = {first.tokens:.3g}, {first.level:.0%} intervals)")
        print(header)
        for r, p_rho, p_mem in zip(result.rows, result.p_most_capacity, result.p_least_memory, strict=True):
            rho = f"{r.rho:.3f} [{r.rho_low:.3f}, {r.rho_high:.3f}]"
            print(f"  {r.name:<16} {r.bits_per_param:6.3f} {r.gmse:8.5f} {rho:>22} {r.delta_loss_vs_bf16:+11.4f} "
                  f"{r.params_to_match / 1e6:7.1f}M {r.memory_to_match_bytes / 1e6:7.1f}MB {p_rho:11.2f} {p_mem:12.2f}")
        best_rho = max(zip(result.p_most_capacity, result.rows, strict=True), key=lambda t: (t[0], t[1].rho))
        best_mem = max(zip(result.p_least_memory, result.rows, strict=True), key=lambda t: (t[0], -t[1].memory_to_match_bytes))
        print(f"  -> most capacity: {best_rho[1].name} (in {best_rho[0]:.0%} of the law's draws); "
              f"least memory to match bf16: {best_mem[1].name} (in {best_mem[0]:.0%})\n")


if __name__ == "__main__":
    main()
