"""One training run: data, model, AdamW with warm-up + cosine, evaluation, checkpoints.

:func:`train_run` is the whole run as a function of its :class:`RunConfig`; under ``torchrun``
each process calls it and the global batch is split across ranks (DDP, or FSDP for presets
flagged ``fsdp``). The batch of step s is a pure function of (seed, s), so a run resumed from
a checkpoint sees exactly the batches an uninterrupted run would; on CPU in fp32 with
deterministic algorithms the resumed run ends with the same loss, bit for bit.

Ctrl-C (SIGINT) asks the run to stop: it finishes the current step, writes a checkpoint and
raises :class:`KeyboardInterrupt`. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gmse_cli.errors import TrainError
from gmse_cli.progress import info, task
from gmse_cli.training.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from gmse_cli.training.config import RunConfig, check_format_fits, plan_run
from gmse_cli.training.data import TokenData, TokenWindows, eval_windows, prepare_tokens
from gmse_cli.training.model import build_model, padded_vocab
from gmse_cli.training.results import (
    DataIdentity,
    LossCurve,
    ModelInfo,
    RunRecord,
    StageGmse,
    TokenizerIdentity,
    TrainingInfo,
)

__all__ = ["train_run", "lr_at", "single_thread_kernels", "DistEnv", "dist_env", "resolve_device", "format_gmse",
           "loss_curve_summary", "evaluate"]

_CURVE_POINTS = 64
_EVAL_BATCH = 16


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def single_thread_kernels() -> None:
    """Run the compressors' numba kernels on the calling thread.

    torch's intra-op pool already owns the cores during training; a second (numba) pool
    spinning against it for the many small per-layer calls costs far more than it saves
    (measured on 2 cores: 15 ms vs 1.5 ms for int4 on a 512 x 128 activation).
    """
    import numba

    numba.set_num_threads(1)


def lr_at(step: int, *, steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up to ``peak``, then cosine to
    ``peak * min_ratio`` at the last update."""
    assert 0 <= step < steps, (step, steps)
    if step < warmup:
        return peak * (step + 1) / warmup  # the first update already moves: no zero-rate step
    span = steps - warmup - 1
    progress = 1.0 if span <= 0 else (step - warmup) / span
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


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


def _init_distributed(env: DistEnv, device: torch.device) -> None:
    import torch.distributed as dist

    if env.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def _barrier(env: DistEnv) -> None:
    if env.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _all_sum(env: DistEnv, values: list[float], device: torch.device) -> list[float]:
    if env.world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def resolve_device(device: str, env: DistEnv) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device '{device}' was asked for but CUDA is not available; use --device cpu")
    if device == "cuda":
        return torch.device(f"cuda:{env.local_rank}")
    return torch.device(device)


def format_gmse(cfg: RunConfig) -> tuple[dict[str, list[StageGmse]], dict[str, float]]:
    """GMSE of each lossy stage and of the whole format, for weights and activations."""
    from gmse_cli.gmse import gmse_of, stage_gmse

    stages: dict[str, list[StageGmse]] = {}
    whole: dict[str, float] = {}
    for role, fmt in (("weights", cfg.weights), ("activations", cfg.activations)):
        if fmt is None:
            continue
        stages[role] = [
            StageGmse(family=str(fam.value), name=est.name, gmse=est.gmse, ci_low=est.ci_low,
                      ci_high=est.ci_high, method=est.method)
            for fam, est in stage_gmse(fmt)
        ]
        whole[role] = gmse_of(fmt).gmse
    return stages, whole


def loss_curve_summary(train_loss: list[float], eval_steps: list[int], eval_loss: list[float]) -> LossCurve:
    """At most ~64 spans of the per-step losses, each summarized by its mean."""
    finite = [v for v in train_loss if math.isfinite(v)]
    n = len(train_loss)
    steps: list[int] = []
    means: list[float] = []
    if n:
        edges = np.unique(np.linspace(0, n, min(n, _CURVE_POINTS) + 1).round().astype(int))
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            chunk = [v for v in train_loss[a:b] if math.isfinite(v)]
            if chunk:
                steps.append(int(b))
                means.append(float(np.mean(chunk)))
    tail = train_loss[max(0, n - max(1, n // 10)):]
    tail = [v for v in tail if math.isfinite(v)]
    return LossCurve(
        steps=steps,
        train_loss=means,
        eval_steps=list(eval_steps),
        eval_loss=list(eval_loss),
        final_train_loss=float(np.mean(tail)) if tail else None,
        min_train_loss=min(finite) if finite else None,
    )


@contextlib.contextmanager
def _graceful_sigint() -> Iterator[Callable[[], bool]]:
    """While active, the first SIGINT only sets a flag (checked between steps)."""
    requested = {"stop": False}
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if requested["stop"]:
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices (linears, embeddings, head), not norm gains: the usual GPT practice.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _wrap(model: nn.Module, cfg: RunConfig, env: DistEnv, device: torch.device) -> tuple[nn.Module, str]:
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


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, parallel: str) -> tuple[dict, dict]:
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=opts)
    inner = model.module if parallel == "ddp" else model
    return inner.state_dict(), optimizer.state_dict()


def _load_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, parallel: str,
                      weights: dict, optim_state: dict) -> None:
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optim_state, options=opts)
        return
    inner = model.module if parallel == "ddp" else model
    inner.load_state_dict(weights)
    optimizer.load_state_dict(optim_state)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    # bf16 autocast on GPU as in the paper; fp32 on CPU (CPU bf16 is slow and not the paper's).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loss(model: nn.Module, batch: torch.Tensor, vocab: int) -> torch.Tensor:
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(input_ids=x).logits  # (B, T, V_padded)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def evaluate(model: nn.Module, windows: np.ndarray, *, env: DistEnv, device: torch.device) -> float:
    """Mean next-token loss over ``windows`` (split across ranks; every rank runs as many
    forward passes, padding with zero-weight batches, so sharded models stay in step)."""
    was_training = model.training
    model.eval()
    mine = windows[env.rank :: env.world]
    per_rank = math.ceil(len(windows) / env.world)
    batches = math.ceil(per_rank / _EVAL_BATCH)
    total = 0.0
    count = 0.0
    for b in range(batches):
        chunk = mine[b * _EVAL_BATCH : (b + 1) * _EVAL_BATCH]
        weight = 1.0
        if len(chunk) == 0:
            chunk, weight = windows[:1], 0.0
        t = torch.from_numpy(chunk).to(device)
        with _autocast(device):
            logits = model(input_ids=t[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1), reduction="sum")
        total += weight * float(loss)
        count += weight * t[:, 1:].numel()
    total, count = _all_sum(env, [total, count], device)
    model.train(was_training)
    return total / count


def train_run(
    cfg: RunConfig,
    *,
    run_dir: str | Path,
    device: str = "auto",
    progress: bool = True,
    resume: bool = True,
    compile_model: bool = False,
    deterministic: bool = True,
    model_dir: str | Path | None = None,
    sweep: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> RunRecord | None:
    """Train one configuration to its token budget; returns its record (None on ranks > 0).

    ``run_dir`` holds this run's checkpoints. The last one is written when the budget is
    reached, before the final evaluation, and is left in place: the caller removes it
    (:func:`~gmse_cli.training.checkpoint.discard_checkpoints`) only once the record is
    durable, so a kill at any point loses no finished training. ``model_dir``: write the final
    model there (a Hugging Face folder plus ``uscl.json``; see ``save_final_model``).
    ``on_step(step, loss)`` is called after every optimizer step (logging hooks, tests).
    """
    from gmse_cli import __version__

    env = dist_env()
    dev = resolve_device(device, env)
    _init_distributed(env, dev)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if dev.type == "cpu":
        single_thread_kernels()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    check_format_fits(cfg)
    stage, whole = format_gmse(cfg)
    run_dir = Path(run_dir)

    # Tokenize on rank 0 first; the others then read the cache. C4 streams the whole budget;
    # a local corpus needs one batch and is reused in epochs beyond its size (noted below).
    streamed, is_c4 = _budget_tokens(cfg), cfg.data.source.strip().lower() == "c4"

    def data() -> TokenData:
        return prepare_tokens(
            cfg.data.source, cfg.data.tokenizer, val_fraction=cfg.data.val_fraction,
            text_field=cfg.data.text_field, min_train_tokens=streamed if is_c4 else cfg.tokens_per_step + 1,
            min_val_tokens=cfg.context + 1,  # a short held-out split is used whole (recorded)
            progress=info if (progress and env.main) else None,
        )

    if env.main:
        tokens = data()
        _barrier(env)
    else:
        _barrier(env)
        tokens = data()
    if env.main and streamed > tokens.meta["train_tokens"]:
        info(f"note: the run reads {streamed:,} tokens from {tokens.meta['train_tokens']:,} training tokens "
              f"({streamed / tokens.meta['train_tokens']:.1f} epochs); scaling-law fits assume unique tokens")
    vocab = tokens.tokenizer.vocab_size
    plan = plan_run(cfg, vocab_size=padded_vocab(vocab))
    local_batch, micro = _batch_split(cfg, env)

    preset = cfg.model_preset
    model = build_model(preset, vocab_size=vocab, context=cfg.context, weights=cfg.weights,
                        activations=cfg.activations, estimator=cfg.estimator, seed=cfg.seed).to(dev)
    model, parallel = _wrap(model, cfg, env, dev)
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg.optim.weight_decay), lr=cfg.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2), eps=1e-8,
        fused=dev.type == "cuda",
    )
    state = TrainState(run_key=plan.run_key)
    ckpt = latest_checkpoint(run_dir) if resume else None
    resumed_step = 0
    if ckpt is not None:
        weights, optim_state, state = load_checkpoint(ckpt)
        resumed_step = state.step
        if state.run_key != plan.run_key:
            raise TrainError(f"checkpoint {ckpt} belongs to another configuration; remove {run_dir}")
        _load_state_dicts(model, optimizer, parallel, weights, optim_state)
    step_fn = torch.compile(model) if compile_model else model

    windows = TokenWindows(tokens.train, context=cfg.context, seed=cfg.seed)
    val = eval_windows(tokens.val, context=cfg.context, max_tokens=cfg.eval_tokens)
    val_periodic = val[: max(1, cfg.periodic_eval_tokens // cfg.context)]
    if ckpt is not None and env.main:
        info(f"resuming {plan.name} from step {state.step} ({ckpt})")

    def checkpoint() -> None:
        model_sd, optim_sd = _state_dicts(model, optimizer, parallel)
        if env.main:
            save_checkpoint(run_dir, model_state=model_sd, optim_state=optim_sd, state=state)
        _barrier(env)

    status = "ok"
    started = time.perf_counter() - state.elapsed_s
    window_t, window_tokens = time.perf_counter(), 0
    model.train()
    bar_columns = ("{tps} tok/s", "loss {loss}")
    with (
        task(plan.name, plan.steps, enabled=progress and env.main, completed=state.step, columns=bar_columns,
             eta=True, keep=True) as bar,
        _graceful_sigint() as stop_requested,
    ):
        while state.step < plan.steps:
            step = state.step
            lr = lr_at(step, steps=plan.steps, peak=cfg.lr, warmup=plan.warmup_steps,
                       min_ratio=cfg.optim.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            accum = local_batch // micro
            for m in range(accum):
                first = step * cfg.batch_size + env.rank * local_batch + m * micro
                batch = torch.from_numpy(windows.samples(first, micro)).to(dev, non_blocking=True)
                # DDP all-reduces gradients on the last micro-batch only.
                sync = parallel != "ddp" or m == accum - 1
                with contextlib.nullcontext() if sync else model.no_sync():
                    with _autocast(dev):
                        loss = _loss(step_fn, batch, vocab) / accum
                    loss.backward()
                loss_sum += float(loss.detach())
            if cfg.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = _all_sum(env, [loss_sum], dev)[0] / env.world
            state.train_loss.append(loss_value)
            state.step = step + 1
            state.elapsed_s = time.perf_counter() - started
            window_tokens += cfg.tokens_per_step
            if on_step is not None:
                on_step(state.step, loss_value)
            if not math.isfinite(loss_value):
                status = "diverged"
                bar.log(f"{plan.name}: loss is {loss_value} at step {state.step}; recorded as diverged")
                break
            now = time.perf_counter()
            bar.update(completed=state.step, tps=f"{window_tokens / max(now - window_t, 1e-9):,.0f}",
                       loss=f"{loss_value:.4f}")
            if now - window_t > 10.0:
                window_t, window_tokens = now, 0
            if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < plan.steps:
                state.eval_steps.append(state.step)
                state.eval_loss.append(evaluate(model, val_periodic, env=env, device=dev))
                bar.log(f"step {state.step}: held-out loss {state.eval_loss[-1]:.4f}")
            if stop_requested():
                checkpoint()
                raise KeyboardInterrupt(f"stopped at step {state.step}; checkpoint in {run_dir}")
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.step < plan.steps:
                checkpoint()

    val_loss: float | None = None
    if status == "ok":
        if ckpt is None or resumed_step < plan.steps:
            checkpoint()  # the trained model is durable before the (long) final evaluation
        val_loss = evaluate(model, val, env=env, device=dev)
        if not math.isfinite(val_loss):
            status, val_loss = "diverged", None
    wall = time.perf_counter() - started
    if status == "ok" and model_dir is not None:
        _export_final_model(model, parallel, Path(model_dir), env=env, cfg=cfg, run_key=plan.run_key,
                            tokenizer_json=tokens.tokenizer.to_json() if tokens.tokenizer.to_json else None)
    _barrier(env)
    if not env.main:
        return None
    meta = tokens.meta
    return RunRecord(
        run_key=plan.run_key,
        name=plan.name,
        status=status,
        weights=cfg.weights.display_name,
        weights_spec=cfg.weights.model_dump(mode="json"),
        activations=cfg.activations.display_name if cfg.activations else None,
        activations_spec=cfg.activations.model_dump(mode="json") if cfg.activations else None,
        stage_gmse=stage,
        format_gmse=whole,
        params=plan.params,
        tokens=state.step * cfg.tokens_per_step,
        tokens_per_param=cfg.tokens_per_param,
        val_loss=val_loss,
        val_tokens=int(val.shape[0] * cfg.context),
        loss_curve=loss_curve_summary(state.train_loss, state.eval_steps, state.eval_loss),
        model=ModelInfo(
            preset=preset.name, layers=preset.layers, heads=preset.heads, d_model=preset.d_model,
            ffn_dim=preset.ffn_dim, vocab_size=padded_vocab(vocab), context=cfg.context,
            non_embedding_params=preset.non_embedding_params,
            embedding_params=preset.embedding_params(padded_vocab(vocab)),
        ),
        training=TrainingInfo(
            steps=plan.steps, tokens_per_step=cfg.tokens_per_step, batch_size=cfg.batch_size,
            lr=cfg.lr, warmup_steps=plan.warmup_steps, min_lr_ratio=cfg.optim.min_lr_ratio,
            beta1=cfg.optim.beta1, beta2=cfg.optim.beta2, weight_decay=cfg.optim.weight_decay,
            grad_clip=cfg.optim.grad_clip, trust=cfg.estimator.trust, rbbm_p=cfg.estimator.rbbm_p,
            precision="bf16-autocast" if dev.type == "cuda" else "fp32", world_size=env.world,
            parallel=parallel,
        ),
        data=DataIdentity(source=cfg.data.source, sha256=tokens.data_sha256,
                          train_tokens=int(meta["train_tokens"]), val_tokens=int(meta["val_tokens"]),
                          val_fraction=tokens.val_fraction),
        tokenizer=TokenizerIdentity(source=tokens.tokenizer.source, sha256=tokens.tokenizer.sha256,
                                    vocab_size=vocab),
        seed=cfg.seed,
        device=_device_name(dev, env),
        wall_time_s=round(wall, 3),
        uscl_version=__version__,
        torch_version=torch.__version__,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sweep=sweep,
    )


def _export_final_model(model: nn.Module, parallel: str, folder: Path, *, env: DistEnv, cfg: RunConfig,
                        run_key: str, tokenizer_json: str | None = None) -> None:
    """Every rank takes part in gathering the state dict (FSDP); rank 0 writes the folder."""
    from gmse_cli.training.checkpoint import save_final_model

    inner = model.module if parallel == "ddp" else model
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


def _budget_tokens(cfg: RunConfig) -> int:
    """Training tokens the run reads (a streamed source must provide them all)."""
    n = cfg.model_preset.non_embedding_params
    steps = math.floor(cfg.tokens_per_param * n / cfg.tokens_per_step)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    return max(steps, 1) * cfg.tokens_per_step + 1


def _batch_split(cfg: RunConfig, env: DistEnv) -> tuple[int, int]:
    """(sequences per rank per step, sequences per forward pass)."""
    if cfg.batch_size % env.world:
        raise TrainError(f"batch_size {cfg.batch_size} is not divisible by the {env.world} processes")
    local = cfg.batch_size // env.world
    micro = min(cfg.micro_batch_size or local, local)
    if local % micro:
        raise TrainError(f"micro_batch_size {micro} does not divide the per-process batch {local}")
    return local, micro


def _device_name(dev: torch.device, env: DistEnv) -> str:
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return f"{env.world}x {name}" if env.world > 1 else name
    return f"cpu x{env.world}" if env.world > 1 else "cpu"
