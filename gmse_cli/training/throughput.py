"""How long a planned run takes here: from finished runs of the same configuration, else from a
few training steps timed on this machine, else from FLOPs at a timed matmul's rate.

A FLOP count misjudges small models badly (the quantizers, the optimizer and Python overhead
dominate a 0.4M-parameter step), so ``uscl train --dry-run`` times the real thing wherever that
is cheap: the preset's model with its formats, at the run's micro-batch and context, on random
tokens, for a few optimizer steps.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence

from gmse_cli.training.sweep import PlannedRun, RunConfig

__all__ = ["TIMED_STEP_LIMIT_S", "step_key", "record_key", "time_steps", "estimate_plans"]

# Time real steps only for configurations whose step the FLOP guess puts under this (seconds;
# the guess is pessimistic for small models):
# a 200M model on a CPU would spend minutes being timed.
TIMED_STEP_LIMIT_S = 10.0
# A run's fixed costs beyond its steps (model build, final evaluation, model export), as a
# share of the steps' time; measured on the tiny preset on 2 cores.
_OVERHEAD = 0.05


def step_key(cfg: RunConfig) -> tuple:
    """What a step's cost depends on: the model, its formats, its batch shape."""
    acts = cfg.activations.display_name if cfg.activations is not None else None
    return (cfg.preset, cfg.weights.display_name, acts, cfg.context, cfg.batch_size)


def record_key(record) -> tuple:
    """:func:`step_key` of a finished run's record."""
    return (record.model.preset, record.weights, record.activations, record.model.context,
            record.training.batch_size)


def time_steps(cfg: RunConfig, *, vocab_size: int, device: str = "cpu", steps: int = 3,
               min_seconds: float = 0.3) -> float:
    """Seconds per optimizer step of ``cfg``'s model: the median of ``steps`` steps (more, up to
    4x, until ``min_seconds`` have passed) timed one by one after a warm-up step.

    The median, not the mean: one step slowed by another process (a 0.25 s step of tiny-100k
    int2 timed at 1.47 s on a shared 2-core machine, 6x) took a two-step mean 3.4x off.
    """
    import torch

    from gmse_cli.training.loop.device import single_thread_kernels
    from gmse_cli.training.loop.run import lm_loss
    from gmse_cli.training.model import build_model

    dev = torch.device(device)
    if dev.type == "cpu":
        single_thread_kernels()  # as the training loop runs
    model = build_model(cfg.model_preset, vocab_size=vocab_size, context=cfg.context, weights=cfg.weights,
                        activations=cfg.activations, estimator=cfg.estimator, seed=cfg.seed).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    micro = cfg.micro_batch_size or cfg.batch_size
    accum = max(1, cfg.batch_size // micro)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab_size, (micro, cfg.context + 1), generator=gen).to(dev)

    def step() -> None:
        for _ in range(accum):
            (lm_loss(model, batch, vocab_size) / accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # first-call costs (allocations, kernel compiles) are not the steady state
    times: list[float] = []
    while len(times) < steps or (sum(times) < min_seconds and len(times) < 4 * steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measured_rate(records: Iterable, cfg: RunConfig) -> float | None:
    """Tokens per second of finished runs with ``cfg``'s step key (median), if any."""
    key = step_key(cfg)
    rates = [r.tokens / r.wall_time_s for r in records
             if record_key(r) == key and r.status == "ok" and r.wall_time_s and r.wall_time_s > 0]
    return statistics.median(rates) if rates else None


def estimate_plans(
    plans: Sequence[PlannedRun],
    runs: Sequence[RunConfig],
    *,
    vocab_size: int,
    device: str,
    flops_per_second: float | None,
    records: Sequence = (),
    progress: bool = True,
) -> tuple[list[PlannedRun], str]:
    """``plans`` with ``est_seconds`` from the best evidence there is, and a line saying which.

    ``records``: finished runs (:class:`~gmse_cli.training.results.RunRecord`); a configuration
    seen there is estimated at its measured rate.
    Otherwise each distinct step key whose FLOP estimate is under :data:`TIMED_STEP_LIMIT_S`
    a step is timed here once; the rest keep the FLOP estimate.
    """
    from gmse_cli.progress import task

    timed: dict[tuple, float] = {}
    sources: set[str] = set()
    out = []
    todo = {step_key(cfg): cfg for cfg, p in zip(runs, plans, strict=True) if not p.done}
    cheap = {
        k: cfg for k, cfg in todo.items()
        if _measured_rate(records, cfg) is None and flops_per_second
        and _flops_per_step(plans, runs, k) / flops_per_second < TIMED_STEP_LIMIT_S
    }
    if cheap:
        try:
            with task("timing training steps", len(cheap), enabled=progress) as bar:
                for k, cfg in cheap.items():
                    acts = cfg.activations.display_name if cfg.activations else "none"
                    bar.update(detail=f"{cfg.preset} w:{cfg.weights.display_name} a:{acts}")
                    timed[k] = time_steps(cfg, vocab_size=vocab_size, device=device)
                    bar.advance()
        except ImportError:  # no torch: FLOPs it is
            timed.clear()
    for cfg, p in zip(runs, plans, strict=True):
        k = step_key(cfg)
        rate = _measured_rate(records, cfg)
        if rate is not None:
            est, how = p.plan.tokens / rate, "finished runs' throughput"
        elif k in timed:
            est, how = p.plan.steps * timed[k] * (1 + _OVERHEAD), "training steps timed here"
        elif flops_per_second:
            est, how = p.plan.flops / flops_per_second, "FLOPs at the timed matmul rate"
        else:
            est, how = None, ""
        if how and not p.done:
            sources.add(how)
        out.append(p.model_copy(update={"est_seconds": est}))
    return out, ", ".join(sorted(sources)) or "no estimate"


def _flops_per_step(plans: Sequence[PlannedRun], runs: Sequence[RunConfig], key: tuple) -> float:
    for cfg, p in zip(runs, plans, strict=True):
        if step_key(cfg) == key:
            return p.plan.flops / max(1, p.plan.steps)
    return math.inf
