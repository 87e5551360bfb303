"""How a submitit job meets submitit: its parameters, its preemption/timeout signal, and its
failure's text.

submitit runs each ``--launcher slurm`` job (:class:`gmse_cli.training.launch.SlurmRun`) under
its own signal handler and reports a failed job as one exception holding the job's traceback.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from typing import Any

from gmse_cli.errors import one_line
from gmse_cli.training.sweep import SlurmSettings

__all__ = ["executor_parameters", "sbatch_options", "preemption_stops_after_the_step", "job_error"]


def executor_parameters(settings: SlurmSettings, sweep: str | None) -> dict[str, Any]:
    """What submitit's executor is given for every job of the sweep (``update_parameters``)."""
    params: dict[str, Any] = {
        "timeout_min": settings.timeout_min,
        "nodes": settings.nodes,
        "cpus_per_task": settings.cpus_per_task,
        "name": f"uscl-{sweep or 'train'}",
    }
    if settings.cluster == "slurm":
        gpus = settings.gpus_per_node
        params |= {
            "gpus_per_node": gpus,
            "tasks_per_node": max(1, gpus),  # one task per GPU
            "slurm_array_parallelism": settings.max_parallel,
        }
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(settings, key)
            if value:
                params[f"slurm_{key}"] = value
        if settings.mem_gb:
            params["mem_gb"] = settings.mem_gb
        if settings.setup:
            params["slurm_setup"] = list(settings.setup)
    return params


_SBATCH = {"slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos",
           "slurm_constraint": "constraint", "name": "job-name", "nodes": "nodes",
           "gpus_per_node": "gpus-per-node", "tasks_per_node": "ntasks-per-node",
           "cpus_per_task": "cpus-per-task", "timeout_min": "time"}


def sbatch_options(settings: SlurmSettings, sweep: str | None, jobs: int) -> str:
    """The #SBATCH options submitit writes for an array of ``jobs`` runs, as a dry run shows them
    (``setup`` lines are counted, not shown: they are shell, not options)."""
    params = executor_parameters(settings, sweep)
    options = [f"--{_SBATCH[k]}={v}" for k, v in params.items() if k in _SBATCH]
    if "mem_gb" in params:
        options.append(f"--mem={params['mem_gb']}GB")
    if jobs > 1:
        options.append(f"--array=0-{jobs - 1}%{settings.max_parallel}")
    setup = f"; {len(settings.setup)} setup line(s)" if settings.setup else ""
    return " ".join(options) + setup


@contextlib.contextmanager
def preemption_stops_after_the_step() -> Iterator[None]:
    """submitit's handler of the preemption/timeout signal calls :meth:`SlurmRun.checkpoint`,
    requeues the job and exits at once, mid-step: the requeued job resumed from the run's last
    periodic checkpoint, every step since lost. While this is active the signal is a Ctrl-C to
    the training loop instead (it stops after the step and writes a checkpoint), and submitit's
    handler runs once the loop has stopped."""
    try:
        import submitit

        sig = submitit.JobEnvironment._usr_sig()
    except ImportError:  # a job called directly, with no submitit installed
        sig = None
    requeue = signal.getsignal(sig) if sig is not None else None
    if not callable(requeue) or threading.current_thread() is not threading.main_thread():
        yield  # not under submitit's handler (a job called directly), or no signals to take
        return
    caught: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        caught.append(signum)  # first: outside the step loop the SIGINT raises right here
        if len(caught) == 1:  # a second Ctrl-C would stop the loop at once, inside its checkpoint
            signal.raise_signal(signal.SIGINT)

    signal.signal(sig, stop)
    try:
        yield
    except KeyboardInterrupt:
        if not caught:
            raise
        signal.signal(sig, requeue)
        requeue(caught[0], None)  # checkpoint(), requeue and exit; returns on tasks of rank > 0
    finally:
        signal.signal(sig, requeue)


def job_error(exc: Exception) -> str:
    """The error a job ended with, in one line: submitit's FailedJobError holds the job's whole
    traceback, whose last 'Name: message' line (before submitit's pointer to the logs) says it."""
    if type(exc).__module__.startswith("submitit"):
        lines = str(exc).split("\n----------------------\nYou can check full logs")[0].splitlines()
        told = [line.strip() for line in lines if re.match(r"\s*[\w.]+(Error|Exception|Interrupt|Exit)\b.*:", line)]
        if told:
            return told[-1][:300]
    return f"{type(exc).__name__}: {one_line(exc) or type(exc).__name__}"[:300]
