"""What a big folder costs each atomic write: the stale-temporary clean-up's listing.

Times write_atomic (durable=False: no fsyncs) of --writes new files into a folder of --entries
files, and into an empty folder; prints the medians and their ratio (1.0: the folder's size
costs nothing). Before the listing was kept per process, each write listed the whole folder
(about 50 ms a write at 100,000 entries, a ratio in the hundreds).

Run: PYTHONPATH=. python benchmarks/atomic_scan.py [--entries 100000] [--writes 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gmse_cli.atomic import write_atomic


def _median_write(folder: Path, writes: int) -> float:
    times = []
    for i in range(writes):
        start = time.perf_counter()
        write_atomic(folder / f"written-{i}.json", b"{}", durable=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uscl-atomic-scan-") as tmp:
        big, empty = Path(tmp) / "big", Path(tmp) / "empty"
        big.mkdir()
        empty.mkdir()
        for i in range(args.entries):
            (big / f"{i:016x}.json").touch()
        in_big, in_empty = _median_write(big, args.writes), _median_write(empty, args.writes)
    print(f"median write: {in_big * 1e3:.3f} ms beside {args.entries} entries, {in_empty * 1e3:.3f} ms in an "
          f"empty folder; ratio {in_big / in_empty:.2f}")


if __name__ == "__main__":
    main()
