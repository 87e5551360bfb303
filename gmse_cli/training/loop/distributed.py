"""Processes under ``torchrun``: who we are, the collectives the loop needs, the model wrapper
(DDP, or FSDP for presets flagged ``fsdp``) and how the global batch splits across ranks.

Every collective is a no-op in a single process, so the loop reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from gmse_cli.training.config import RunConfig
from gmse_cli.training.plan import split_batch

__all__ = ["DistEnv", "dist_env", "init_distributed", "barrier", "all_sum", "wrap_model", "batch_split"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Rank and world size from torchrun's environment (1 process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return DistEnv(rank, world, local)


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU) when there is more than one process."""
    import torch.distributed as dist

    if env.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def barrier(env: DistEnv) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_sum(env: DistEnv, values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over every rank (in float64)."""
    if env.world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap_model(model: nn.Module, cfg: RunConfig, env: DistEnv, device: torch.device) -> tuple[nn.Module, str]:
    """The model as the processes train it, and how: "none", "ddp" or "fsdp"."""
    if env.world == 1:
        return model, "none"
    if cfg.model_preset.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model, "fsdp"
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids), "ddp"


def batch_split(cfg: RunConfig, env: DistEnv) -> tuple[int, int]:
    """(sequences per rank per step, sequences per forward pass)."""
    return split_batch(cfg, env.world)
