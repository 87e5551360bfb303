"""Benchmark: peak memory and speed of `uscl mse` on a multi-GB checkpoint (issue 6).

Issue 6 asks that a checkpoint of several GB stream layer by layer within a few hundred MB.
This writes a synthetic Llama-like safetensors checkpoint (default ~3 GB) into a temporary
folder, then runs `uscl mse --json` on it in a fresh process per format (with and without
``--sample 0.1``) and reports each run's peak resident memory (the child's own ``ru_maxrss``
from ``wait4``) against the file size and the largest measured tensor, and its throughput.

The checkpoint: a bf16 token embedding (skipped by the default layer rule), one decoder block
stored in float32, bf16 decoder blocks (hidden 4096, MLP 11008) until the size is reached, and
one 8192 x 8192 bf16 matrix. Values are heavy-tailed (Student t, 5 degrees of freedom, with a
few outlier input columns), like real weights. Tensors are written chunk by chunk with a
hand-written header (u64 little-endian header length, JSON header, raw little-endian data),
so the writer never holds more than one chunk.

Each run is compared with a *baseline*: the same command on a tiny checkpoint with the same
row lengths, which pays the same imports, numba kernels and GMSE estimates but streams
almost nothing. ``peak - baseline`` is what streaming the big file costs; throughput is the
measured layers' parameters over ``wall - baseline wall`` (with ``--sample`` every row is still
read once, for the outlier rows the sample takes whole).

``--shards N`` writes the checkpoint as N files with a ``model.safetensors.index.json``, as a
sharded Hugging Face download (``uscl mse`` is given the index); ``--dtype F16`` stores the
matrices in float16; ``--search-rows 256`` also measures the rows `uscl search --checkpoint`
holds and its evaluator's peak (tracemalloc) over int4 at every level.

Measured on 2 shared CPU cores with ``--size-gb 13 --shards 3 --formats int4 --search-rows 256``
(13.2 GB, 6.75G parameters measured): int4 peak 310 MB (1.21x the largest layer in float32,
0.023x the files, 144 s), 326 MB with ``--sample 0.1``; the search evaluator held 1,155 MB of
rows and peaked at 1,604 MB (1.39x).

Run: python benchmarks/mse_memory.py [--size-gb 3] [--dir /tmp] [--formats int4 nvfp4 ...] [--shards 3] [--dtype F16] [--search-rows 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MB = 2**20
HIDDEN, MLP, VOCAB, WIDE = 4096, 11008, 32000, 8192
FORMATS = ("int4", "int4-g128", "mxfp4", "nvfp4", "had128+int4")
CHUNK_VALUES = 4 * MB  # values generated and written at a time
_STORAGE = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32}


def _block(index: int, dtype: str, rows: int = 0) -> list[tuple[str, str, tuple[int, ...]]]:
    """One decoder block's tensors (``rows`` > 0 shrinks every matrix to that many rows)."""
    p = f"model.layers.{index}"

    def r(n: int) -> int:
        return min(rows, n) if rows else n

    return [
        (f"{p}.input_layernorm.weight", "F32", (HIDDEN,)),
        *((f"{p}.self_attn.{m}_proj.weight", dtype, (r(HIDDEN), HIDDEN)) for m in "qkvo"),
        (f"{p}.post_attention_layernorm.weight", "F32", (HIDDEN,)),
        (f"{p}.mlp.gate_proj.weight", dtype, (r(MLP), HIDDEN)),
        (f"{p}.mlp.up_proj.weight", dtype, (r(MLP), HIDDEN)),
        (f"{p}.mlp.down_proj.weight", dtype, (r(HIDDEN), MLP)),
    ]


def _nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) * np.dtype(_STORAGE[dtype]).itemsize


def layout(size_gb: float, *, rows: int = 0, dtype: str = "BF16") -> list[tuple[str, str, tuple[int, ...]]]:
    """Tensor names, dtypes and shapes of a checkpoint of about ``size_gb`` GB."""
    fixed = [
        ("model.embed_tokens.weight", dtype, (min(rows, VOCAB) if rows else VOCAB, HIDDEN)),
        *_block(0, "F32", rows),
        ("model.vision_proj.weight", dtype, (min(rows, WIDE) if rows else WIDE, WIDE)),
    ]
    tensors = list(fixed)
    block_bytes = sum(_nbytes(d, s) for _, d, s in _block(1, dtype))
    fixed_bytes = sum(_nbytes(d, s) for _, d, s in fixed)
    blocks = max(1, round((size_gb * 2**30 - fixed_bytes) / block_bytes))
    for i in range(1, blocks + 1):
        tensors.extend(_block(i, dtype, rows))
    return tensors


def _values(rng: np.random.Generator, pool: np.ndarray, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Heavy-tailed float32 values of ``shape``, row block by row block.

    Slices of a pre-drawn Student-t pool (drawing t variates is ~10x slower than writing
    them), scaled per block, with a few outlier input columns as in real weights.
    """
    cols = shape[-1]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    outliers = rng.choice(cols, size=max(1, cols // 512), replace=False)
    step = max(1, CHUNK_VALUES // cols)
    for start in range(0, rows, step):
        n = min(step, rows - start) * cols
        offset = int(rng.integers(0, len(pool) - n + 1))
        block = pool[offset : offset + n].reshape(-1, cols) * np.float32(0.02 * rng.uniform(0.5, 2.0))
        if len(shape) > 1:
            block[:, outliers] *= np.float32(8.0)
        yield block


def write_checkpoint(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]], seed: int = 0) -> None:
    """Write a safetensors file by hand, one chunk of values at a time."""
    header: dict[str, dict] = {}
    offset = 0
    for name, dtype, shape in tensors:
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    rng = np.random.default_rng(seed)
    pool = rng.standard_t(5, size=CHUNK_VALUES + MB).astype(np.float32)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head)
        for _, dtype, shape in tensors:
            for block in _values(rng, pool, shape):
                fh.write(block.astype(_STORAGE[dtype]).tobytes())


def write_shards(folder: Path, tensors: list[tuple[str, str, tuple[int, ...]]], shards: int) -> Path:
    """Write ``tensors`` as ``shards`` files and a ``model.safetensors.index.json`` naming them,
    as a sharded Hugging Face download is laid out; returns the index."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(tensors) // shards)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        part = tensors[s * per : (s + 1) * per]
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        write_checkpoint(folder / name, part, seed=s)
        weight_map.update(dict.fromkeys((n for n, _, _ in part), name))
    index = folder / "model.safetensors.index.json"
    total = sum(_nbytes(d, s) for _, d, s in tensors)
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def run_mse(checkpoint: Path, fmt: str, sample: float | None) -> dict:
    """One `uscl mse --json` in a fresh process: its peak RSS, wall time and result."""
    cmd = [sys.executable, "-m", "gmse_cli", "mse", str(checkpoint), "--format", fmt, "--json"]
    if sample is not None:
        cmd += ["--sample", str(sample)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN is the max over all children)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        out.seek(0)
        (result,) = json.loads(out.read())["results"]
    return {"peak": usage.ru_maxrss * 1024, "wall": wall, "params": result["params"], "sample": result["sample"]}


def search_rows_memory(checkpoint: Path, rows_per_layer: int) -> None:
    """`uscl search --checkpoint`'s evaluator: the rows it holds and its peak over a final pass."""
    import tracemalloc

    from gmse_cli.realmse import open_checkpoint, select_layers
    from gmse_cli.search.evaluate import CheckpointEvaluator
    from gmse_cli.spec import parse_shorthand

    layers = select_layers(open_checkpoint(checkpoint))
    start = time.perf_counter()
    tracemalloc.start()
    evaluator = CheckpointEvaluator(layers, rows_per_layer=rows_per_layer, seed=0)
    held = sum(x.nbytes for x, _, _ in evaluator.data)
    for level in range(evaluator.levels):
        evaluator.measure(parse_shorthand("int4"), level)
    evaluator.final(parse_shorthand("int4"))
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\nsearch --checkpoint evaluator ({rows_per_layer} rows per layer, int4 at every level): rows held "
          f"{held / MB:,.0f} MB, peak {peak / MB:,.0f} MB ({peak / held:.2f}x the rows), "
          f"{now / MB:,.0f} MB held after, {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=3.0, help="checkpoint size to write (GB)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write it")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    parser.add_argument("--sample", type=float, default=0.1, help="the sampled runs' --sample")
    parser.add_argument("--dtype", choices=("BF16", "F16"), default="BF16", help="storage of the big matrices")
    parser.add_argument("--shards", type=int, default=1, help="write this many shards and an index.json")
    parser.add_argument("--search-rows", type=int, default=0,
                        help="also measure `search --checkpoint`'s evaluator with this many rows per layer")
    args = parser.parse_args()

    tensors = layout(args.size_gb, dtype=args.dtype)
    size = 8 + sum(_nbytes(d, s) for _, d, s in tensors)
    free = shutil.disk_usage(args.dir).free
    print(f"disk: {free / 2**30:.1f} GB free in {args.dir}; the checkpoint needs {size / 2**30:.2f} GB")
    if free < size + 2**30:
        raise SystemExit(f"not enough disk in {args.dir}: lower --size-gb or pick --dir")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="uscl-mse-memory-") as tmp:
        tiny = Path(tmp) / "tiny.safetensors"
        start = time.perf_counter()
        if args.shards > 1:
            big = write_shards(Path(tmp) / "sharded", tensors, args.shards)
        else:
            big = Path(tmp) / "model.safetensors"
            write_checkpoint(big, tensors)
        print(f"wrote {size / 2**30:.2f} GB ({args.dtype}, {args.shards} file(s)) in {time.perf_counter() - start:.0f} s")
        write_checkpoint(tiny, layout(0.0, rows=4, dtype=args.dtype))

        from gmse_cli.realmse import open_checkpoint, select_layers

        layers = select_layers(open_checkpoint(big))
        largest = max(layers, key=lambda t: t.params)
        largest_stored = max(layers, key=lambda t: t.nbytes)
        f32 = 4 * largest.params
        params = sum(t.params for t in layers)
        print(f"file {size / MB:,.0f} MB; {len(layers)} layers measured, {params / 1e9:.2f} G params; "
              f"largest tensor {largest.name} {list(largest.shape)} {largest.dtype} "
              f"({largest.nbytes / MB:.0f} MB stored, {f32 / MB:.0f} MB as float32); largest stored: "
              f"{largest_stored.name} {largest_stored.dtype} ({largest_stored.nbytes / MB:.0f} MB)")

        rows = []
        for fmt in args.formats:
            for sample in (None, args.sample):
                base = run_mse(tiny, fmt, sample)
                run = run_mse(big, fmt, sample)
                rows.append((fmt, sample, run, base, run["params"] / max(run["wall"] - base["wall"], 1e-9)))
                print(f"  {fmt:<12} sample {sample or 1:<4g} peak {run['peak'] / MB:6.0f} MB "
                      f"(baseline {base['peak'] / MB:4.0f})  wall {run['wall']:6.1f} s", flush=True)
        if args.search_rows:
            search_rows_memory(big, args.search_rows)

    print()
    head = (f"{'format':<12} {'sample':>6} {'peak MB':>8} {'-base MB':>8} {'peak/f32 largest':>16} "
            f"{'peak/file':>9} {'wall s':>7} {'M params/s':>10}")
    print(head)
    print("-" * len(head))
    for fmt, sample, run, base, rate in rows:
        print(f"{fmt:<12} {sample or 1:>6g} {run['peak'] / MB:>8.0f} {(run['peak'] - base['peak']) / MB:>8.0f} "
              f"{run['peak'] / f32:>16.2f} {run['peak'] / size:>9.3f} {run['wall']:>7.1f} {rate / 1e6:>10.1f}")
    print("\npeak: the child's maximum resident set; -base: above the same command on a tiny checkpoint "
          "with the same row lengths; M params/s: the measured layers' parameters (all of them, "
          "sampled or not) over the wall time above the baseline's.")


if __name__ == "__main__":
    main()
