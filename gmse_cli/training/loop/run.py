"""One training run, start to finish: :func:`train_run`.

The order matters and is kept on purpose: the last checkpoint is written before the final
evaluation and left in place for the caller, then the final model is exported, then the
record is built on rank 0.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from gmse_cli.errors import TrainError
from gmse_cli.messages import info
from gmse_cli.progress import task
from gmse_cli.training.checkpoint import (
    TrainState,
    resume_checkpoint,
    save_checkpoint,
    unreadable_checkpoint,
)
from gmse_cli.training.config import RunConfig, check_format_fits
from gmse_cli.training.data import TokenData, TokenWindows, eval_windows, prepare_tokens
from gmse_cli.training.loop.device import (
    autocast,
    device_name,
    resolve_device,
    single_thread_kernels,
)
from gmse_cli.training.loop.distributed import (
    all_sum,
    barrier,
    batch_split,
    dist_env,
    init_distributed,
    wrap_model,
)
from gmse_cli.training.loop.evaluation import evaluate
from gmse_cli.training.loop.optimizer import lr_at, param_groups
from gmse_cli.training.loop.record import format_gmse, loss_curve_summary
from gmse_cli.training.loop.signals import graceful_sigint
from gmse_cli.training.loop.state import export_final_model, load_state_dicts, state_dicts
from gmse_cli.training.model import build_model, padded_vocab
from gmse_cli.training.plan import budget_steps, plan_run
from gmse_cli.training.results import (
    DataIdentity,
    ModelInfo,
    RunRecord,
    TokenizerIdentity,
    TrainingInfo,
)

__all__ = ["train_run", "lm_loss"]


def lm_loss(model: nn.Module, batch: torch.Tensor, vocab: int) -> torch.Tensor:
    """Next-token cross-entropy of ``model`` on ``batch`` (B, T + 1) of token ids."""
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(input_ids=x).logits  # (B, T, V_padded)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


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
    init_distributed(env, dev)
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
        barrier(env)
    else:
        barrier(env)
        tokens = data()
    if env.main and streamed > tokens.meta["train_tokens"]:
        info(f"note: the run reads {streamed:,} tokens from {tokens.meta['train_tokens']:,} training tokens "
              f"({streamed / tokens.meta['train_tokens']:.3g} epochs); scaling-law fits assume unique tokens")
    vocab = tokens.tokenizer.vocab_size
    plan = plan_run(cfg, vocab_size=padded_vocab(vocab))
    local_batch, micro = batch_split(cfg, env)

    preset = cfg.model_preset
    model = build_model(preset, vocab_size=vocab, context=cfg.context, weights=cfg.weights,
                        activations=cfg.activations, estimator=cfg.estimator, seed=cfg.seed).to(dev)
    model, parallel = wrap_model(model, cfg, env, dev)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay), lr=cfg.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2), eps=1e-8,
        fused=dev.type == "cuda",
    )
    state = TrainState(run_key=plan.run_key)

    def restore(ckpt: Path, weights: dict, optim_state: dict, saved: TrainState) -> None:
        if saved.run_key != plan.run_key:
            raise TrainError(f"checkpoint {ckpt} belongs to another configuration; remove {run_dir}")
        try:  # files that parse but do not fit this model (a tensor missing, another model's)
            load_state_dicts(model, optimizer, parallel, weights, optim_state)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            why = " ".join(str(exc).split())[:300]
            raise unreadable_checkpoint(ckpt, f"{type(exc).__name__}: {why}") from None

    # the newest checkpoint that loads: one damaged by hand beside an older complete one is noted
    resumed = resume_checkpoint(run_dir, restore, info if env.main else lambda _: None) if resume else None
    ckpt, resumed_step = None, 0
    if resumed is not None:
        ckpt, state = resumed
        resumed_step = state.step
    if not state.world_sizes or state.world_sizes[-1] != env.world:
        state.world_sizes.append(env.world)  # a resume on another process count: the record says so
    step_fn = torch.compile(model) if compile_model else model

    windows = TokenWindows(tokens.train, context=cfg.context, seed=cfg.seed)
    val = eval_windows(tokens.val, context=cfg.context, max_tokens=cfg.eval_tokens)
    val_periodic = val[: max(1, cfg.periodic_eval_tokens // cfg.context)]
    if ckpt is not None and env.main:
        info(f"resuming {plan.name} from step {state.step} ({ckpt})")

    def checkpoint() -> None:
        model_sd, optim_sd = state_dicts(model, optimizer, parallel)
        if env.main:
            save_checkpoint(run_dir, model_state=model_sd, optim_state=optim_sd, state=state)
        barrier(env)

    status = "ok"
    started = time.perf_counter() - state.elapsed_s
    window_t, window_tokens = time.perf_counter(), 0
    model.train()
    bar_columns = ("{tps} tok/s", "loss {loss}")
    with (
        task(plan.name, plan.steps, enabled=progress and env.main, completed=state.step, columns=bar_columns,
             eta=True, keep=True) as bar,
        graceful_sigint() as stop_requested,
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
                    with autocast(dev):
                        loss = lm_loss(step_fn, batch, vocab) / accum
                    loss.backward()
                loss_sum += float(loss.detach())
            if cfg.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = all_sum(env, [loss_sum], dev)[0] / env.world
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
            # The ranks agree on a Ctrl-C: one that saw it alone, or a step before the others, sat
            # in the checkpoint's barrier while they sat in the next step's all-reduce, for ever.
            if all_sum(env, [float(stop_requested())], dev)[0]:
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
        to_json = tokens.tokenizer.to_json
        export_final_model(model, parallel, Path(model_dir), env=env, cfg=cfg, run_key=plan.run_key,
                           tokenizer_json=to_json() if to_json is not None else None)
    barrier(env)
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
            world_sizes=state.world_sizes if len(state.world_sizes) > 1 else None,
            parallel=parallel,
        ),
        data=DataIdentity(source=cfg.data.source, sha256=tokens.data_sha256,
                          train_tokens=int(meta["train_tokens"]), val_tokens=int(meta["val_tokens"]),
                          val_fraction=tokens.val_fraction),
        tokenizer=TokenizerIdentity(source=tokens.tokenizer.source, sha256=tokens.tokenizer.sha256,
                                    vocab_size=vocab),
        seed=cfg.seed,
        device=device_name(dev, env),
        wall_time_s=round(wall, 3),
        uscl_version=__version__,
        torch_version=torch.__version__,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sweep=sweep,
    )


def _budget_tokens(cfg: RunConfig) -> int:
    """Training tokens the run reads (a streamed source must provide them all)."""
    steps = budget_steps(cfg)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    return max(steps, 1) * cfg.tokens_per_step + 1
