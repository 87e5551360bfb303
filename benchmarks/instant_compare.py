"""The warm instant path at a baseline commit against the working tree, interleaved.

Each side runs on its own snapshot (benchmarks/snapshot.py: the baseline as committed at
--base, the working tree as it is now, both byte-compiled) with its own USCL_CACHE_DIR and
NUMBA_CACHE_DIR, both warmed by one untimed run of every command first. Then the commands run
--repeat times, alternating sides (base, head, head, base, ...) so that load on a shared
machine falls on both alike; the report is the median wall and child CPU seconds per side and
their ratio (head / base).

Run: python benchmarks/instant_compare.py --base f198d1f [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snapshot import snapshot_commit, snapshot_package

COMMANDS = [["rank"], ["predict", "int4"], ["gmse", "int4", "nvfp4", "--json"]]


def _env(root: Path, caches: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(root), USCL_CACHE_DIR=str(caches / "uscl"), NUMBA_CACHE_DIR=str(caches / "numba"))
    return env


def _time(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the baseline commit")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uscl-instant-cmp-") as tmp:
        tmp_path = Path(tmp)
        sides = {"base": snapshot_commit(args.base, tmp_path / "base" / "pkg"),
                 "head": snapshot_package(_made(tmp_path / "head" / "pkg"), byte_compile=True)}
        envs = {name: _env(root, root.parent / "caches") for name, root in sides.items()}
        for name in sides:  # warm: GMSE cache, numba kernels, page cache
            for command in COMMANDS:
                _time([sys.executable, "-m", "gmse_cli", *command], envs[name], tmp_path)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for i in range(args.repeat):
            order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
            for command in COMMANDS:
                for name in order:
                    results.setdefault((name, " ".join(command)), []).append(
                        _time([sys.executable, "-m", "gmse_cli", *command], envs[name], tmp_path))
        print(f"{'command':32} {'base wall':>10} {'head wall':>10} {'ratio':>6} {'base cpu':>9} {'head cpu':>9} {'ratio':>6}")
        for command in COMMANDS:
            label = " ".join(command)
            base, head = results[("base", label)], results[("head", label)]
            bw, hw = statistics.median(t[0] for t in base), statistics.median(t[0] for t in head)
            bc, hc = statistics.median(t[1] for t in base), statistics.median(t[1] for t in head)
            print(f"{'uscl ' + label:32} {bw:10.3f} {hw:10.3f} {hw / bw:6.2f} {bc:9.3f} {hc:9.3f} {hc / bc:6.2f}")


def _made(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
