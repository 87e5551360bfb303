"""One training run: data, model, AdamW with warm-up + cosine, evaluation, checkpoints.

:func:`train_run` is the whole run as a function of its :class:`RunConfig`; under ``torchrun``
each process calls it and the global batch is split across ranks (DDP, or FSDP for presets
flagged ``fsdp``). The batch of step s is a pure function of (seed, s), so a run resumed from
a checkpoint sees exactly the batches an uninterrupted run would; on CPU in fp32 with
deterministic algorithms the resumed run ends with the same loss, bit for bit.

Ctrl-C (SIGINT) asks the run to stop: it finishes the current step, writes a checkpoint and
raises :class:`KeyboardInterrupt`. A second Ctrl-C stops at once.

One module per concept:

- :mod:`.run`          :func:`train_run` itself
- :mod:`.optimizer`    parameter groups and the learning-rate schedule (:func:`lr_at`)
- :mod:`.distributed`  torchrun's environment (:func:`dist_env`), collectives, DDP/FSDP
                       wrapping, the batch split across ranks
- :mod:`.device`       device resolution, autocast, the recorded device name, kernel threads
- :mod:`.signals`      Ctrl-C handling between steps
- :mod:`.evaluation`   held-out loss (:func:`evaluate`)
- :mod:`.state`        full state dicts for checkpoints, restoring them, the final-model export
- :mod:`.record`       the record's measured parts: per-stage GMSE, the loss-curve summary
"""

from __future__ import annotations

from gmse_cli.training.loop.device import resolve_device, single_thread_kernels
from gmse_cli.training.loop.distributed import DistEnv, dist_env
from gmse_cli.training.loop.evaluation import evaluate
from gmse_cli.training.loop.optimizer import lr_at
from gmse_cli.training.loop.record import format_gmse, loss_curve_summary
from gmse_cli.training.loop.run import train_run

__all__ = [
    "train_run",
    "lr_at",
    "single_thread_kernels",
    "DistEnv",
    "dist_env",
    "resolve_device",
    "format_gmse",
    "loss_curve_summary",
    "evaluate",
]
