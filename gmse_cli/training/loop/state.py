"""Model and optimizer state under each parallel mode ("none", "ddp", "fsdp"): the full state
dicts a checkpoint stores, restoring them, and exporting the final model.

Under FSDP every rank must take part in gathering a full state dict, even though only rank 0
writes it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gmse_cli.training.config import RunConfig
from gmse_cli.training.loop.distributed import DistEnv

__all__ = ["unwrap_model", "state_dicts", "load_state_dicts", "export_final_model"]


def unwrap_model(model: nn.Module, parallel: str) -> nn.Module:
    """The model inside a DDP wrapper (FSDP shards in place: nothing to unwrap)."""
    return model.module if parallel == "ddp" else model


def state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, parallel: str) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts, on CPU under FSDP."""
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=opts)
    inner = unwrap_model(model, parallel)
    return inner.state_dict(), optimizer.state_dict()


def load_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, parallel: str,
                     weights: dict, optim_state: dict) -> None:
    """Restore what :func:`state_dicts` returned (every rank loads the full dicts)."""
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim_state, options=opts)
        return
    inner = unwrap_model(model, parallel)
    inner.load_state_dict(weights)
    optimizer.load_state_dict(optim_state)
    # load_state_dict takes moments of any shape: a checkpoint's of another model failed only at
    # the first step, as a size-mismatch traceback
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if name != "step" and isinstance(value, torch.Tensor) and value.shape != param.shape:
                    raise ValueError(f"optimizer state {name} has shape {list(value.shape)}, "
                                     f"its parameter {list(param.shape)}")


def export_final_model(model: nn.Module, parallel: str, folder: Path, *, env: DistEnv, cfg: RunConfig,
                       run_key: str, tokenizer_json: str | None = None) -> None:
    """Every rank takes part in gathering the state dict (FSDP); rank 0 writes the folder
    (with ``tokenizer.json`` when the run's tokenizer can be saved)."""
    from gmse_cli.training.checkpoint import save_final_model

    inner = unwrap_model(model, parallel)
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        weights = inner.state_dict()
    if not env.main:
        return
    config = inner.config.to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    meta = {
        "run_key": run_key,
        "name": cfg.name,
        "weights": cfg.weights.model_dump(mode="json"),
        "activations": cfg.activations.model_dump(mode="json") if cfg.activations else None,
        "estimator": cfg.estimator.model_dump(mode="json"),
        "note": "latent full-precision weights; the formats above compress them in every forward pass",
    }
    save_final_model(folder, model_state=weights, config_json=config, uscl_meta=meta, tokenizer_json=tokenizer_json)
