"""Benchmark of task `compilefast`: what a first run costs on a new machine, before and after.

A first `uscl gmse` of a format outside the shipped table (or a first `uscl mse`) compiles numba
kernels before it answers; the compiled kernels are kept on disk, so later runs load them. This
times each command below as a whole process with fresh caches (an empty USCL_CACHE_DIR and an
empty NUMBA_CACHE_DIR), for two versions of the package in the same run: the baseline (a git
ref, default `main`) and the working tree, each a snapshot byte-compiled as `pip install` leaves
it. It reports wall seconds and CPU seconds (the child's user + system: on a shared machine
other load disturbs CPU time far less than wall time), the ratio baseline / now, and checks that
a second process on the same caches compiles nothing and prints the same stdout.

With --kernels it also prints, per version, the CPU seconds each top-level numba kernel took to
compile for one GMSE batch of each format (32 Gaussian rows of 4096 drawn, compressed and
compared; in one process, fresh cache), with the LLVM share: where the first run's time goes.

Run: python benchmarks/compile_time.py [--baseline main] [--repeat 1] [--kernels]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from snapshot import snapshot_commit, snapshot_package

COMMANDS = [
    ["gmse", "e3m2-g32-se4m3", "--json"],
    ["gmse", "int3-g64-sfp16", "--json"],
    ["gmse", "2:4+int4", "--json", "--recompute", "--monte-carlo"],  # in the table: asked of the engine
    ["gmse", "sint4-g128-mse", "--json"],
    ["mse", "{model}", "-f", "int4-g128-mse", "-f", "mxfp4", "--json"],
]
KERNEL_FORMATS = ["e3m2-g32-se4m3", "int3-g64-sfp16", "2:4+int4", "sint4-g128-mse", "mxfp4"]

# Run in a child with the version on PYTHONPATH: compile what each format needs, then print one
# line per top-level kernel: CPU seconds, of which LLVM, and how many signatures compiled.
PROFILE = r'''
import sys, time
from collections import defaultdict
import numpy as np
from numba.core import event
stack, llvm, agg = [], [], defaultdict(lambda: [0.0, 0.0, 0])
class Compile(event.Listener):
    def on_start(self, ev):
        f = ev.data["dispatcher"].py_func
        cells = zip(f.__code__.co_freevars, f.__closure__ or ())
        variant = ",".join(f"{k}={c.cell_contents}" for k, c in cells if isinstance(c.cell_contents, (bool, int)))
        name = f.__qualname__.replace("<locals>.", "") + (f"({variant})" if variant else "")
        stack.append([name, time.process_time(), 0.0])
    def on_end(self, ev):
        name, start, in_llvm = stack.pop()
        if stack:
            stack[-1][2] += in_llvm
        else:
            a = agg[name]; a[0] += time.process_time() - start; a[1] += in_llvm; a[2] += 1
class Llvm(event.Listener):
    def on_start(self, ev):
        llvm.append(time.process_time())
    def on_end(self, ev):
        spent = time.process_time() - llvm.pop()
        if stack and not llvm:
            stack[-1][2] += spent
event.register("numba:compile", Compile())
event.register("numba:llvm_lock", Llvm())
from gmse_cli.gmse.bank import SampleBank
from gmse_cli.spec import resolve_format
bank = SampleBank(row_length=4096, batch_elements=32 * 4096)  # one batch: 32 Gaussian rows
for name in sys.argv[1:]:
    bank.batch_totals(resolve_format(name), 0)  # draw, compress, per-row squared errors
for name, (cpu, in_llvm, n) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
    print(f"{name}\t{cpu:.2f}\t{in_llvm:.2f}\t{n}")
'''


def _env(root: Path, caches: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(root), USCL_CACHE_DIR=str(caches / "uscl"), NUMBA_CACHE_DIR=str(caches / "numba"))
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, str]:
    """(wall s, CPU s, stdout, stderr) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, res.stdout, res.stderr


def _model(path: Path) -> Path:
    """A small safetensors file: two layers of Gaussian-ish weights."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"layers.0.mlp.weight": rng.standard_normal((256, 1024)).astype(np.float32) * 0.02,
               "layers.1.attn.weight": rng.standard_t(4, (512, 512)).astype(np.float32) * 0.02}, str(path))
    return path


def _cold(root: Path, command: list[str], work: Path, repeat: int) -> tuple[float, float, bool]:
    """Best (wall, CPU) of ``repeat`` first runs on fresh caches, and whether a second process on
    the same caches (with --recompute for gmse, so that its kernels run again rather than the
    GMSE cache answering) compiled nothing and printed the same stdout."""
    walls, cpus, warm_ok = [], [], True
    for _ in range(repeat):
        caches = Path(tempfile.mkdtemp(dir=work))
        env = _env(root, caches)
        wall, cpu, out, _ = _run([sys.executable, "-m", "gmse_cli", *command], env, work)
        walls.append(wall)
        cpus.append(cpu)
        rerun = [*command, "--recompute"] if command[0] == "gmse" and "--recompute" not in command else command
        _, _, again, err = _run([sys.executable, "-m", "gmse_cli", *rerun], env, work)
        warm_ok &= "compiling numba kernels" not in err and again == out
    return min(walls), min(cpus), warm_ok


def _kernels(root: Path, work: Path) -> dict[str, tuple[float, float, int]]:
    caches = Path(tempfile.mkdtemp(dir=work))
    res = subprocess.run([sys.executable, "-c", PROFILE, *KERNEL_FORMATS], env=_env(root, caches), cwd=work,
                         capture_output=True, text=True, check=True)
    rows = {}
    for line in res.stdout.splitlines():
        name, cpu, in_llvm, n = line.split("\t")
        rows[name] = (float(cpu), float(in_llvm), int(n))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git ref to compare with (default main)")
    parser.add_argument("--repeat", type=int, default=1, help="first runs per command and version (best kept)")
    parser.add_argument("--kernels", action="store_true", help="also the per-kernel compile table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions = {"baseline": snapshot_commit(args.baseline, work / "base"),
                    "now": snapshot_package((work / "now").resolve(), byte_compile=True)}
        model = _model(work / "model.safetensors")
        print(f"first run on fresh caches, baseline {args.baseline} vs working tree (best of {args.repeat})")
        print(f"{'command':52s} {'base wall':>9s} {'base cpu':>8s} {'now wall':>8s} {'now cpu':>7s} "
              f"{'cpu ratio':>9s}  warm ok")
        for command in COMMANDS:
            argv = [str(model) if a == "{model}" else a for a in command]
            base = _cold(versions["baseline"], argv, work, args.repeat)
            now = _cold(versions["now"], argv, work, args.repeat)
            label = " ".join(command).replace("{model}", "model.safetensors")
            print(f"{label:52s} {base[0]:9.1f} {base[1]:8.1f} {now[0]:8.1f} {now[1]:7.1f} "
                  f"{base[1] / now[1]:8.2f}x  {base[2] and now[2]}", flush=True)
        if args.kernels:
            print(f"\nkernel compile CPU s (LLVM s) [signatures], compress() of {' '.join(KERNEL_FORMATS)}")
            tables = {name: _kernels(root, work) for name, root in versions.items()}
            for name, rows in tables.items():
                total = sum(cpu for cpu, _, _ in rows.values())
                print(f"{name}: {total:.1f} s in all")
                for kernel, (cpu, in_llvm, n) in rows.items():
                    print(f"  {kernel:48s} {cpu:6.2f} ({in_llvm:5.2f}) [{n}]")


if __name__ == "__main__":
    main()
