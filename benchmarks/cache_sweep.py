"""What a big GMSE cache costs a command that reads it: the stale-temporary sweep's scan.

Each side (commits given by --refs, and the working tree) runs on its own snapshot with its
own caches. `uscl gmse FORMAT` (a format outside the shipped table) is run once to compute
and cache its GMSE; then the cache folder gets --entries more entries (copies of that one
under random keys) and --stale temporary files ('.NAME.XXXXXXXX.tmp') two hours old, as are
the files beside the folder (a sweep's stamp: the fill is 'an hour ago'). Timed:
the first command after (it sweeps the stale files), then --repeat more, sides interleaved;
reported as medians, with what the sweep left in the folder.

Run: python benchmarks/cache_sweep.py --refs f198d1f HEAD [--repeat 11]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from instant_compare import _env, _made, _time
from snapshot import snapshot_commit, snapshot_package

TWO_HOURS = 7200


def _fill(folder: Path, entries: int, stale: int) -> None:
    (real,) = [p for p in folder.iterdir() if p.suffix == ".json"]
    data = real.read_bytes()
    for _ in range(entries):
        (folder / f"{secrets.token_hex(32)}.json").write_bytes(data)
    old = time.time() - TWO_HOURS
    for _ in range(stale):
        path = folder / f".{secrets.token_hex(32)}.json.{secrets.token_hex(4)}.tmp"
        path.write_bytes(b"{")
        os.utime(path, (old, old))
    for path in folder.parent.iterdir():  # an hour on for the cache's own files (a sweep's stamp)
        if path.is_file():
            os.utime(path, (old, old))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="*", default=[], help="commits to time beside the working tree")
    parser.add_argument("--format", default="int3-g64-sfp16")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--stale", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    command = ["gmse", args.format]
    with tempfile.TemporaryDirectory(prefix="uscl-cache-sweep-") as tmp:
        tmp_path = Path(tmp)
        sides = {ref: snapshot_commit(ref, tmp_path / f"side{i}" / "pkg") for i, ref in enumerate(args.refs)}
        sides["tree"] = snapshot_package(_made(tmp_path / "tree" / "pkg"), byte_compile=True)
        envs = {name: _env(root, root.parent / "caches") for name, root in sides.items()}
        argv = [sys.executable, "-m", "gmse_cli", *command]
        for name in sides:
            _time(argv, envs[name], tmp_path)  # compute and cache the entry, compile the kernels
            _fill(Path(envs[name]["USCL_CACHE_DIR"]) / "gmse", args.entries, args.stale)
        first = {name: _time(argv, envs[name], tmp_path)[0] for name in sides}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(args.repeat):
            for name in (list(sides) if i % 2 == 0 else list(reversed(sides))):
                times[name].append(_time(argv, envs[name], tmp_path)[0])
        print(f"uscl {' '.join(command)}, {args.entries} entries, {args.stale} stale temporaries")
        print(f"{'side':10} {'first s':>8} {'median s':>9} {'stale left':>10}")
        for name in sides:
            folder = Path(envs[name]["USCL_CACHE_DIR"]) / "gmse"
            left = sum(1 for p in folder.iterdir() if p.name.endswith(".tmp"))
            print(f"{name:10} {first[name]:8.3f} {statistics.median(times[name]):9.3f} {left:10d}")


if __name__ == "__main__":
    main()
