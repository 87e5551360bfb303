"""Where a run computes: the device it asks for, its precision, its recorded name, and the
threads the compressors' kernels use beside torch's."""

from __future__ import annotations

import contextlib

import torch

from gmse_cli.errors import TrainError
from gmse_cli.training.loop.distributed import DistEnv

__all__ = ["single_thread_kernels", "resolve_device", "autocast", "device_name"]


def single_thread_kernels() -> None:
    """Run the compressors' numba kernels on the calling thread.

    torch's intra-op pool already owns the cores during training; a second (numba) pool
    spinning against it for the many small per-layer calls costs far more than it saves
    (measured on 2 cores: 15 ms vs 1.5 ms for int4 on a 512 x 128 activation).
    """
    import numba

    numba.set_num_threads(1)


def resolve_device(device: str, env: DistEnv) -> torch.device:
    """``device`` ("auto", "cpu", "cuda", "cuda:1", ...) as this process's torch device."""
    if device == "auto":
        return torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device '{device}' was asked for but CUDA is not available; use --device cpu")
    if device == "cuda":
        return torch.device(f"cuda:{env.local_rank}")
    return torch.device(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    # bf16 autocast on GPU as in the paper; fp32 on CPU (CPU bf16 is slow and not the paper's).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_name(dev: torch.device, env: DistEnv) -> str:
    """The hardware as a run record names it, e.g. "4x NVIDIA H100" or "cpu"."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return f"{env.world}x {name}" if env.world > 1 else name
    return f"cpu x{env.world}" if env.world > 1 else "cpu"
