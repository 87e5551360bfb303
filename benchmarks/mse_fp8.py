"""Benchmark: `uscl mse` on an fp8 checkpoint against the same weights stored in bf16.

Writes LAYERS random (out, in) matrices in DeepSeek's fp8 layout (``F8_E4M3`` codes beside a
float32 ``weight_scale_inv`` per 128 x 128 block, ``config.json`` naming ``quant_method: fp8``)
and, as the baseline, the weights those codes stand for stored in bf16, then measures each
format on both in this process (best of REPEATS, after one warm-up run that compiles the
kernels). It prints the parameters per second of each and their ratio, and the time to decode
the codes by uscl's 256-entry table against ml_dtypes' cast.

Measured on 2 CPU cores (4 layers of 4096 x 4096, three runs): int4 161-176M parameters/s
against 246-252M/s for bf16 (0.66-0.72x), nvfp4 80-82M/s against 123-135M/s (0.61-0.65x);
reading one layer's 16.8M codes as float32 51-60 ms, against 93-96 ms reading the same bytes
and casting them with ml_dtypes (1.6-1.9x).

Run: python benchmarks/mse_fp8.py [--layers 4] [--size 4096] [--formats int4 nvfp4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from gmse_cli.realmse import measure_mse, open_checkpoint, read_rows


def write_pair(folder: Path, layers: int, size: int) -> tuple[Path, Path]:
    """The fp8 checkpoint and the bf16 one of the weights it stands for."""
    rng = np.random.default_rng(0)
    fp8, plain = {}, {}
    blocks = size // 128
    for i in range(layers):
        w = (0.02 * rng.standard_normal((size, size))).astype(np.float32)
        scale = np.abs(w.reshape(blocks, 128, blocks, 128)).max(axis=(1, 3)) / 448.0
        full = np.repeat(np.repeat(scale, 128, 0), 128, 1)
        codes = (w / full).astype(ml_dtypes.float8_e4m3fn)
        name = f"model.layers.{i}.mlp.up_proj.weight"
        fp8[name], fp8[name + "_scale_inv"] = codes, scale.astype(np.float32)
        plain[name] = (codes.astype(np.float32) * full).astype(ml_dtypes.bfloat16)
    for sub, tensors in (("fp8", fp8), ("bf16", plain)):
        (folder / sub).mkdir()
        save_file(tensors, str(folder / sub / "model.safetensors"))
    (folder / "fp8" / "config.json").write_text(json.dumps(
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
    return folder / "fp8", folder / "bf16"


def best_seconds(path: Path, fmt: str, repeats: int) -> float:
    measure_mse(path, [fmt], law=None, rel_err=0.05)  # kernels compiled, GMSE estimated
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        measure_mse(path, [fmt], law=None, rel_err=0.05)
        times.append(time.perf_counter() - start)
    return min(times)


def decode_times(path: Path) -> tuple[float, float]:
    """Seconds to read one layer's codes as float32 with uscl (decoded by its table), and by
    reading the same bytes and casting them with ml_dtypes."""
    info = next(t for t in open_checkpoint(path).tensors if t.dtype == "F8_E4M3")
    plain = info.model_copy(update={"scale": None, "scale_block": None})  # the codes alone
    start = time.perf_counter()
    ours = read_rows(plain, slice(None))
    table = time.perf_counter() - start
    start = time.perf_counter()
    with info.file.open("rb") as fh:
        fh.seek(info.offset)
        raw = np.frombuffer(fh.read(info.nbytes), dtype=ml_dtypes.float8_e4m3fn).reshape(info.shape)
    cast = raw.astype(np.float32)
    seconds = time.perf_counter() - start
    assert np.array_equal(ours, cast, equal_nan=True)
    return table, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096, help="rows and columns of each layer (a multiple of 128)")
    parser.add_argument("--formats", nargs="+", default=["int4"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = args.layers * args.size**2
    with tempfile.TemporaryDirectory() as tmp:
        fp8, bf16 = write_pair(Path(tmp), args.layers, args.size)
        for fmt in args.formats:
            t8, t16 = best_seconds(fp8, fmt, args.repeats), best_seconds(bf16, fmt, args.repeats)
            print(f"{fmt}: fp8 {params / t8 / 1e6:.0f}M params/s, bf16 {params / t16 / 1e6:.0f}M params/s, "
                  f"fp8/bf16 speed {t16 / t8:.2f}x")
        table, cast = decode_times(fp8)
        print(f"reading {args.size**2 / 1e6:.1f}M fp8 codes as float32: uscl (a 256-entry table) {table * 1e3:.0f} ms, "
              f"the same bytes cast by ml_dtypes {cast * 1e3:.0f} ms ({cast / table:.1f}x)")


if __name__ == "__main__":
    main()
