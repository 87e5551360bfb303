"""Training throughput: the cost of training over compressed weights and activations.

CPU (always): tokens/s of full training steps (forward, backward, AdamW) of the ``tiny`` preset
in fp32 and with int4 weights + int4 activations (QuEST's quantizer with its trust mask), on
the same batches, in one run. Steps of the two models are interleaved so that both see the
same machine load (these machines are shared); the overhead ratio is the ratio of total times.
Target: at most 1.3x.

GPU (when CUDA is available): the paper's ``30m`` preset, bf16 autocast, 64 sequences x 512
tokens per step (one H100's share of the paper's 262,144-token batch): tokens/s and model FLOPs
utilization (6N + attention FLOPs per token over the GPU's dense bf16 peak), fp32 weights vs
int4 W+A, with and without ``torch.compile``. Without CUDA it says so.

    PYTHONPATH=. .venv/bin/python benchmarks/train.py [--steps 8] [--gpu-steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from gmse_cli.spec import resolve_format
from gmse_cli.training.loop import single_thread_kernels
from gmse_cli.training.model import build_model
from gmse_cli.training.presets import get_preset

VOCAB = 4096  # a byte-level BPE of the offline corpus (train/cpu-mini.toml uses bpe:4096)
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (NVIDIA datasheet)


def _make(preset: str, formats: tuple[str | None, str | None], context: int, device: str):
    w, a = formats
    model = build_model(
        get_preset(preset), vocab_size=VOCAB, context=context,
        weights=resolve_format(w) if w else None, activations=resolve_format(a) if a else None,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    return model, opt


def _step(model, opt, batch: torch.Tensor, device: str) -> None:
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with ctx:
        logits = model(input_ids=batch[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def cpu_benchmark(steps: int) -> None:
    preset = get_preset("tiny")
    batch_size, context = preset.batch_size, preset.context
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (batch_size, context + 1), generator=gen) for _ in range(steps + 1)]
    variants = {"fp32": (None, None), "int4 W+A": ("int4", "int4")}
    single_thread_kernels()  # as train_run does on CPU
    models = {name: _make("tiny", f, context, "cpu") for name, f in variants.items()}
    for model, opt in models.values():  # warm-up: numba compilation, allocator
        _step(model, opt, batches[0], "cpu")
    spent = dict.fromkeys(models, 0.0)
    for i in range(1, steps + 1):
        for name, (model, opt) in models.items():
            t = time.perf_counter()
            _step(model, opt, batches[i], "cpu")
            spent[name] += time.perf_counter() - t
    tokens = steps * batch_size * context
    print(f"CPU, preset tiny (N={preset.non_embedding_params:,}), {batch_size} x {context} tokens/step, "
          f"{steps} steps each, {torch.get_num_threads()} threads")
    for name, s in spent.items():
        print(f"  {name:10s} {tokens / s:10,.0f} tokens/s   ({s / steps:.3f} s/step)")
    ratio = spent["int4 W+A"] / spent["fp32"]
    print(f"  overhead ratio int4 W+A / fp32: {ratio:.3f}x  (target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'})")


def gpu_benchmark(steps: int) -> None:
    if not torch.cuda.is_available():
        print("GPU: unmeasured (no CUDA device on this machine)")
        return
    preset = get_preset("30m")
    batch_size, context = 64, 512
    flops_per_token = preset.flops_per_token(vocab_size=VOCAB, context=context)
    name = torch.cuda.get_device_name()
    print(f"GPU {name}, preset 30m (N={preset.non_embedding_params:,}), {batch_size} x {context} tokens/step, bf16 autocast")
    torch.backends.cuda.matmul.allow_tf32 = True
    batch = torch.randint(0, VOCAB, (batch_size, context + 1), device="cuda")
    for label, formats in (("fp32 weights", (None, None)), ("int4 W+A", ("int4", "int4"))):
        for compiled in (False, True):
            model, opt = _make("30m", formats, context, "cuda")
            run = torch.compile(model) if compiled else model
            for _ in range(3):
                _step(run, opt, batch, "cuda")
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(steps):
                _step(run, opt, batch, "cuda")
            torch.cuda.synchronize()
            rate = steps * batch_size * context / (time.perf_counter() - t)
            mfu = rate * flops_per_token / H100_BF16_PEAK
            print(f"  {label:12s} compile={str(compiled):5s} {rate:12,.0f} tokens/s  MFU {100 * mfu:5.1f}% (of H100 bf16 peak)")
            del model, opt, run
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed CPU steps per variant")
    parser.add_argument("--gpu-steps", type=int, default=20, help="timed GPU steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu_benchmark(args.steps)
    gpu_benchmark(args.gpu_steps)


if __name__ == "__main__":
    main()
