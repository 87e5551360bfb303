"""How long a Gaussian VQ codebook takes to train, against the estimate the status line shows.

Measures, in one run on this machine:
  (a) exact path (up to 1024 codewords, 2-D and up): each size trained in full with the
      trainer's defaults (nothing is cached or written); the nearest-codeword work, summed
      over every assignment as (vector, codeword) pairs, gives the seconds per pair and the
      number of full-size Lloyd passes that LBG and the utility moves cost;
  (b) streamed path (above 1024 codewords): seconds per streamed-Lloyd iteration from the
      shipped product starts, as the slope between a 1- and a 4-iteration run;
and prints each measured time beside ``training_seconds``' estimate.

Run: python benchmarks/vq_training.py [--exact 3x4 5x6] [--streamed 8x16 4x16]
(sizes as DIMxINDEX_BITS; the exact sizes take minutes each).
"""

from __future__ import annotations

import argparse
import json
import time


def _exact(sizes: list[tuple[int, int]]) -> None:
    from gmse_cli.compress.vq import lbgu, lloyd
    from gmse_cli.compress.vq.gaussian import train_gaussian_codebook, training_seconds

    work: dict[int, float] = {}  # vectors per call -> units (the polish sample is the largest)
    nearest, two = lloyd.nearest_with, lbgu.two_nearest

    def counted_nearest(searcher, x):
        work[len(x)] = work.get(len(x), 0.0) + len(x) * searcher.c.shape[0]
        return nearest(searcher, x)

    def counted_two(x, c):
        work[len(x)] = work.get(len(x), 0.0) + len(x) * c.shape[0]
        return two(x, c)

    lloyd.nearest_with, lbgu.two_nearest = counted_nearest, counted_two
    train_gaussian_codebook(2, 2)  # numba kernels loaded (or compiled) before timing
    try:
        for dim, bits in sizes:
            work.clear()
            start = time.perf_counter()
            _, info = train_gaussian_codebook(dim, bits)
            seconds = time.perf_counter() - start
            rows = sorted(work)  # the held-out check's 2^16, the training sample, the polish sample
            units = sum(work.values())
            passes = (units - work[rows[-1]]) / (rows[-2] * info.codewords)
            print(json.dumps({
                "path": "exact", "dim": dim, "index_bits": bits, "seconds": round(seconds, 1),
                "estimate": round(training_seconds(dim, bits)), "seconds_per_pair": f"{seconds / units:.3g}",
                "lbg_passes": round(passes), "polish_iterations": info.train_iterations, "moves": info.train_moves,
            }), flush=True)
    finally:
        lloyd.nearest_with, lbgu.two_nearest = nearest, two


def _streamed(sizes: list[tuple[int, int]]) -> None:
    from gmse_cli.compress.vq.gaussian import gaussian_codebook, training_seconds
    from gmse_cli.compress.vq.streamed import lloyd_streamed, streamed_plan

    for dim, bits in sizes:
        left, _ = gaussian_codebook(dim // 2, bits // 2)
        right, _ = gaussian_codebook(dim - dim // 2, bits - bits // 2)
        lloyd_streamed(left, right, seed=1, plan=streamed_plan(dim)._replace(iterations=1))  # kernels warm
        took = {}
        for iterations in (1, 4):
            start = time.perf_counter()
            lloyd_streamed(left, right, seed=1, plan=streamed_plan(dim)._replace(iterations=iterations))
            took[iterations] = time.perf_counter() - start
        per = (took[4] - took[1]) / 3
        print(json.dumps({
            "path": "streamed", "dim": dim, "index_bits": bits, "seconds_per_iteration": round(per, 2),
            "whole_run": round(took[1] - per + streamed_plan(dim).iterations * per), "estimate": round(training_seconds(dim, bits)),
        }), flush=True)


def main() -> None:
    def size(text: str) -> tuple[int, int]:
        dim, bits = text.split("x")
        return int(dim), int(bits)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact", type=size, nargs="*", default=[(2, 6), (3, 6), (5, 6), (8, 6), (16, 6)])
    parser.add_argument("--streamed", type=size, nargs="*", default=[(2, 16), (4, 16), (8, 16), (16, 16)])
    args = parser.parse_args()
    _streamed(args.streamed)
    _exact(args.exact)


if __name__ == "__main__":
    main()
