"""Benchmark of task `perf`: how long a command leaves its user without a word, before and after.

A command that works for more than about a second shows progress on stderr. This measures, for
each command below, the longest stretch in which nothing reached stderr (from the start, between
writes, to the exit), as seconds and as a fraction of the whole run, for two versions of the
package in the same run: the baseline (a git ref, default `main`) and the working tree, each a
snapshot byte-compiled as `pip install` leaves it.

  - `rank int4 nvfp4 mxfp4 --plot` on a pseudo-terminal (warm caches): matplotlib's import, the
    layout and the label placement came after the ranking, with nothing on screen; now a
    "drawing plot" status runs meanwhile.
  - `fit examples/cpu-law.jsonl --model unified --json` on a pipe with fresh caches: its first
    run on a machine compiles two numba kernels (about 2 s of CPU) and, piped, said nothing at
    all until it ended; now the one "compiling numba kernels (once per machine)" line comes
    first, as for the GMSE kernels. (On a pipe a bar is whole lines, one every 10 s after its
    first at 0.5 s: gmse_cli.progress._Lines.)

Run: python benchmarks/silence.py [--baseline main] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from snapshot import REPO, snapshot_commit, snapshot_package


def _silence(argv: list[str], env: dict[str, str], cwd: Path, *, terminal: bool) -> tuple[float, float, float]:
    """(longest silence on stderr, time to the first stderr byte, whole run) in seconds."""
    stamps: list[float] = []
    if terminal:
        master, slave = pty.openpty()
        err_target, reader_fd = slave, master
    else:
        reader_fd, err_target = os.pipe()

    def read() -> None:
        while True:
            try:
                chunk = os.read(reader_fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            stamps.append(time.perf_counter())

    thread = threading.Thread(target=read, daemon=True)
    start = time.perf_counter()
    thread.start()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err_target)
    os.close(err_target)
    code = proc.wait()
    end = time.perf_counter()
    thread.join(timeout=10)
    os.close(reader_fd)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    marks = [start, *sorted(stamps), end]
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    first = (stamps[0] if stamps else end) - start
    return max(gaps), first, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git ref of the version to compare with (default: main)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        versions = {f"baseline ({args.baseline})": snapshot_commit(args.baseline, tmp_path / "base"),
                    "working tree": snapshot_package(tmp_path / "new", byte_compile=True)}
        runs = REPO / "examples" / "cpu-law.jsonl"
        rows = []
        for label, root in versions.items():
            base_env = {k: v for k, v in os.environ.items()
                        if k not in ("PYTHONDONTWRITEBYTECODE", "NO_COLOR", "FORCE_TERMINAL", "TTY_INTERACTIVE")}
            base_env.update(PYTHONPATH=str(root), TERM="xterm-256color", COLUMNS="120")
            warm = dict(base_env, USCL_CACHE_DIR=str(tmp_path / label / "uscl"),
                        NUMBA_CACHE_DIR=str(tmp_path / label / "numba"))
            uscl = [sys.executable, "-m", "gmse_cli"]
            plot = [*uscl, "rank", "int4", "nvfp4", "mxfp4", "--plot", str(tmp_path / "rank.png")]
            subprocess.run(plot, env=warm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # caches filled
            measured = [_silence(plot, warm, tmp_path, terminal=True) for _ in range(args.repeat)]
            rows.append((label, "rank ... --plot (terminal, warm)", measured, "longest"))
            fit = [*uscl, "fit", str(runs), "--model", "unified", "--json"]
            measured = []
            for i in range(args.repeat):
                cold = dict(base_env, USCL_CACHE_DIR=str(tmp_path / f"cold-{label}-{i}" / "uscl"),
                            NUMBA_CACHE_DIR=str(tmp_path / f"cold-{label}-{i}" / "numba"))
                measured.append(_silence(fit, cold, tmp_path, terminal=False))
            rows.append((label, "fit ... --json (pipe, fresh caches)", measured, "first"))

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"(1 / 5 / 15 min) at the end; medians of {args.repeat}")
    print(f"{'version':<22} {'command':<38} {'silent s':>9} {'run s':>7} {'silent/run':>11}  measure")
    silent_of: dict[tuple[str, str], float] = {}
    for label, command, measured, kind in rows:
        silent = statistics.median(m[0] if kind == "longest" else m[1] for m in measured)
        whole = statistics.median(m[2] for m in measured)
        silent_of[(label, command)] = silent
        what = "longest silence" if kind == "longest" else "time to the first stderr line"
        print(f"{label:<22} {command:<38} {silent:>9.2f} {whole:>7.2f} {silent / whole:>11.2f}  {what}")
    print()
    base_label = f"baseline ({args.baseline})"
    for command in dict.fromkeys(command for _, command, _, _ in rows):
        before, after = silent_of[(base_label, command)], silent_of[("working tree", command)]
        print(f"{command}: silence {before:.2f} s -> {after:.2f} s ({before / after:.1f}x shorter)")


if __name__ == "__main__":
    main()
