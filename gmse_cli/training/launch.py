"""Running a list of runs: in process, across the GPUs of a node (torchrun), or on Slurm.

- ``local``: runs one after another in this process. Under ``torchrun`` (WORLD_SIZE set) every
  process walks the same list and each run is data-parallel across them (DDP, or FSDP for the
  presets flagged ``fsdp``); rank 0 appends the results.
- ``torchrun``: re-executes the same ``uscl train`` command under
  ``python -m gmse_cli.training.torchrun_entry --standalone --nproc_per_node N`` (the worker entry point is
  ``python -m gmse_cli.training``), which then takes the ``local`` path in each process.
- ``slurm``: one submitit job per unfinished run, resources from the spec's ``[slurm]`` table;
  a multi-GPU job runs one task per GPU and sets up torch.distributed from Slurm's variables.
  Jobs resume from their last checkpoint when requeued after preemption or timeout.

Finished runs (their key already in the results file) are skipped in every mode; a diverged
run is recorded with status "diverged" and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmse_cli import locks
from gmse_cli.errors import BackendMissing, TrainError, bad_value, one_line
from gmse_cli.sigterm import sigterm_unwinds
from gmse_cli.training.checkpoint import discard_checkpoints
from gmse_cli.training.config import RunConfig
from gmse_cli.training.results import RunRecord, append_record, finished_keys
from gmse_cli.training.submitit_jobs import (
    executor_parameters,
    job_error,
    preemption_stops_after_the_step,
)
from gmse_cli.training.sweep import SlurmSettings, check_slurm_device

__all__ = ["SweepOutcome", "run_local", "run_torchrun", "run_slurm", "SlurmRun"]


@dataclass
class SweepOutcome:
    records: list[RunRecord]
    skipped: list[str]
    submitted: list[str]  # Slurm job ids
    failed: list[str] = field(default_factory=list)  # "<run>: job <id> failed: <why>; log <path>"


def _ckpt_dir(root: Path, cfg: RunConfig) -> Path:
    return root / cfg.run_key()


def _finish(out: Path, record: RunRecord, model_dir: Path | None, ckpt_dir: Path) -> RunRecord:
    """Append the record (durable), then drop the run's checkpoints: never the other order."""
    if model_dir is not None and record.status == "ok":
        rel = os.path.relpath(model_dir.resolve(), Path(out).resolve().parent)
        record = record.model_copy(update={"model_dir": rel})
    append_record(out, record)
    discard_checkpoints(ckpt_dir)
    return record


def run_local(
    runs: list[RunConfig],
    *,
    out: Path,
    checkpoint_root: Path,
    device: str = "auto",
    progress: bool = True,
    compile_model: bool = False,
    sweep: str | None = None,
    models_root: Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> SweepOutcome:
    """Train every unfinished run in order; append each record as soon as it finishes.

    ``models_root``: keep each finished run's final model in ``models_root/<run key>/``.
    """
    from gmse_cli.training.loop import dist_env, train_run

    env = dist_env()
    done = finished_keys(out)
    outcome = SweepOutcome(records=[], skipped=[], submitted=[])
    for i, cfg in enumerate(runs, start=1):
        key = cfg.run_key()
        run_dir = _ckpt_dir(checkpoint_root, cfg)
        # One process trains a run at a time: a second sweep on the same results file (the same
        # shard started twice) skips the run the first is training; racing it, one of them found
        # its checkpoint folder deleted by the other's finish and stopped with an error.
        with _claim(checkpoint_root, key, enabled=env.world == 1) as mine:
            # Another process writing the same results file may have finished this run meanwhile:
            # read it again (one process only: ranks of one job must agree on what they train).
            if key in done or (env.world == 1 and key in finished_keys(out)):
                outcome.skipped.append(cfg.name)
                if env.main:
                    discard_checkpoints(run_dir)  # left by a kill between the append and the clean-up
                    log(f"[{i}/{len(runs)}] {cfg.name}: already in {out}, skipped")
                if mine and env.world == 1:
                    _drop_claim(checkpoint_root, key)
                continue
            if not mine:
                outcome.skipped.append(cfg.name)
                log(f"[{i}/{len(runs)}] {cfg.name}: another process is training it, skipped")
                continue
            if env.main:
                log(f"[{i}/{len(runs)}] {cfg.name}")
            model_dir = models_root / key if models_root is not None else None
            record = train_run(cfg, run_dir=run_dir, device=device, progress=progress,
                               compile_model=compile_model, sweep=sweep, model_dir=model_dir)
            if record is not None:
                record = _finish(out, record, model_dir, run_dir)
                outcome.records.append(record)
                loss = "diverged" if record.val_loss is None else f"{record.val_loss:.4f}"
                log(f"    val loss {loss}  N={record.params:,}  D={record.tokens:,}  {record.wall_time_s:.0f} s")
                if env.world == 1:
                    _drop_claim(checkpoint_root, key)
        _barrier()
    return outcome


@contextlib.contextmanager
def _claim(checkpoint_root: Path, key: str, *, enabled: bool = True) -> Iterator[bool]:
    """True while this process alone may train run ``key``: an exclusive, non-blocking lock on
    ``<checkpoint_root>/<key>.lock``; False while another process holds it. The kernel drops
    the lock with its process, so a killed sweep never leaves a run claimed."""
    if not enabled or not locks.AVAILABLE:  # Windows: runs are not claimed
        yield True
        return
    try:
        checkpoint_root.mkdir(parents=True, exist_ok=True)
        handle = open(checkpoint_root / f"{key}.lock", "a+")  # held across the yield
    except OSError as exc:
        raise TrainError(f"cannot write checkpoint folder {checkpoint_root}: {exc.strerror or exc}") from None
    # On a file system that takes no locks the sweep trains as if no other process ran it.
    with handle, locks.held(handle, wait=False) as mine:
        yield mine


def _drop_claim(checkpoint_root: Path, key: str) -> None:
    """Remove a finished run's lock file (while holding it). A process that opened the old file
    and locks it afterwards reads the results file again under the lock and skips the run."""
    (checkpoint_root / f"{key}.lock").unlink(missing_ok=True)


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is present whenever training ran
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run_torchrun(args: list[str], *, nproc_per_node: int) -> int:
    """Run ``uscl <args>`` under torch.distributed.run; returns its exit code."""
    if nproc_per_node < 1:
        raise bad_value(TrainError, "nproc_per_node", nproc_per_node, "must be at least 1")
    cmd = [
        sys.executable, "-m", "gmse_cli.training.torchrun_entry", "--standalone",
        f"--nproc_per_node={nproc_per_node}", "-m", "gmse_cli.training", *args,
    ]
    return call_passing_interrupts(cmd)


_TORCHRUN_GRACE_SECONDS = 3.0
"""How long an interrupted uscl waits for torchrun to stop on its own before passing SIGINT on."""


def call_passing_interrupts(cmd: list[str]) -> int:
    """Run ``cmd`` and return its exit code; a Ctrl-C here is passed on to it, and waited for.

    ``subprocess.call`` SIGKILLs its child on a KeyboardInterrupt: the torchrun agent died at
    once and left its workers running unattended (`kill -INT` of the uscl process alone, as a
    supervisor or a script sends it: 'aborted', exit 130, while both workers trained on and
    recorded the run). torchrun passes a SIGINT on to its workers, which checkpoint and stop, so
    it gets one and is waited for; a further Ctrl-C kills it, as before. A Ctrl-C at a terminal
    reaches torchrun itself (the whole process group gets it): a second SIGINT while it stops
    its workers printed its SignalException traceback, so it is sent only to a torchrun still
    running after a grace period."""
    proc = subprocess.Popen(cmd)
    # a SIGTERM while torchrun stops after a Ctrl-C is passed on too (outside, uscl died of it alone)
    with _sigterm_passed_on(proc):
        try:
            return proc.wait()
        except KeyboardInterrupt:
            try:
                try:
                    proc.wait(timeout=_TORCHRUN_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
                    proc.wait()
            except KeyboardInterrupt:
                proc.kill()
                proc.wait()
            raise


_SIGTERM_WAIT_SECONDS = 35.0
"""How long a SIGTERM'd uscl waits for torchrun to stop its workers before killing it: longer
than torchrun's own 30 s before it kills workers that do not stop, so that it gets to."""


def _sigterm_passed_on(proc: subprocess.Popen) -> contextlib.AbstractContextManager[None]:
    """While the body runs, a SIGTERM to uscl reaches ``proc`` (torchrun, which passes it to its
    workers) and is waited for, up to :data:`_SIGTERM_WAIT_SECONDS`, before uscl dies of it as
    the signal's default would. Before, uscl died at once and torchrun and its workers trained
    on unattended. (The handler only signals and unwinds: waiting inside it, within
    ``proc.wait``, would deadlock on the lock that wait holds.)"""

    def wait_or_kill() -> None:
        try:
            proc.wait(timeout=_SIGTERM_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return sigterm_unwinds(on_signal=lambda: proc.send_signal(signal.SIGTERM), before_dying=wait_or_kill)


class SlurmRun:
    """A submitit job: train one run (resuming from its checkpoint) and append its record.

    ``checkpoint`` makes submitit requeue the same job on preemption or timeout; the requeued
    job resumes from the run's last checkpoint.
    """

    # defaults for a job pickled before these were kept (requeued after an upgrade)
    device: str = "auto"
    compile_model: bool = False
    threads: int | None = None

    def __init__(self, cfg_json: str, out: str, checkpoint_root: str, sweep: str | None,
                 models_root: str | None = None, *, device: str = "auto", compile_model: bool = False,
                 threads: int | None = None) -> None:
        self.cfg_json = cfg_json
        self.out = out
        self.checkpoint_root = checkpoint_root
        self.sweep = sweep
        self.models_root = models_root
        # the command's --device, --compile and --threads: a job's own process never saw them
        self.device, self.compile_model, self.threads = device, compile_model, threads

    def __call__(self) -> dict[str, Any] | None:
        from gmse_cli.training.loop import train_run

        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = RunConfig.model_validate_json(self.cfg_json)
        key, root = cfg.run_key(), Path(self.checkpoint_root)
        run_dir = root / key
        # A one-task job claims its run as a local sweep does, so the same sweep submitted twice
        # trains each run once (the tasks of a multi-task job would have to agree: unclaimed).
        alone = int(os.environ.get("SLURM_NTASKS", "1")) <= 1
        with preemption_stops_after_the_step(), _claim(root, key, enabled=alone) as mine:
            if not mine:
                return None  # another job is training it and will append its record
            if key in finished_keys(self.out):
                discard_checkpoints(run_dir)
                return None
            model_dir = Path(self.models_root) / key if self.models_root else None
            record = train_run(cfg, run_dir=run_dir, device=self.device, progress=False, sweep=self.sweep,
                               model_dir=model_dir, compile_model=self.compile_model)
            if record is None:
                return None
            record = _finish(Path(self.out), record, model_dir, run_dir)
            if alone:
                _drop_claim(root, key)
            return record.model_dump(mode="json")

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def run_slurm(
    runs: list[RunConfig],
    *,
    out: Path,
    checkpoint_root: Path,
    settings: SlurmSettings,
    sweep: str | None = None,
    models_root: Path | None = None,
    wait: bool | None = None,
    device: str = "auto",
    compile_model: bool = False,
    threads: int | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> SweepOutcome:
    """Submit one job per unfinished run; waits for them only on the local/debug executors,
    where a job that fails is logged (its run, its error, its log file) and in
    ``outcome.failed``, and the other jobs still run."""
    try:
        import submitit
    except ImportError:
        raise BackendMissing("--launcher slurm needs submitit: pip install 'uscl[train]'") from None
    check_slurm_device(device, settings)
    done = finished_keys(out)
    todo = [cfg for cfg in runs if cfg.run_key() not in done]
    outcome = SweepOutcome(records=[], skipped=[c.name for c in runs if c.run_key() in done], submitted=[])
    if not todo:
        return outcome
    try:
        executor = submitit.AutoExecutor(folder=settings.folder, cluster=settings.cluster)
    except (RuntimeError, OSError) as exc:  # submitit finds no srun: this is no Slurm machine
        raise TrainError(f"--launcher slurm: {_one_line(exc)} ([slurm] cluster = \"local\" runs the jobs here)") from None
    params = executor_parameters(settings, sweep)
    try:  # submitit's own checks, e.g. its local executor runs one node only
        executor.update_parameters(**params)
    except (ValueError, RuntimeError) as exc:
        raise TrainError(f"[slurm] settings for cluster '{settings.cluster}': {_one_line(exc)}") from None
    out_abs, ckpt_abs = str(Path(out).resolve()), str(Path(checkpoint_root).resolve())
    models_abs = str(Path(models_root).resolve()) if models_root is not None else None
    waits = wait if wait is not None else settings.cluster != "slurm"
    # Slurm throttles the array itself (slurm_array_parallelism); submitit's local executor
    # starts every job at once, so here at most max_parallel are submitted before waiting.
    logs = Path(settings.folder).resolve()
    window = settings.max_parallel if waits and settings.cluster != "slurm" else len(todo)
    for start in range(0, len(todo), window):
        jobs = []
        batch = todo[start:start + window]
        try:  # sbatch refusing the jobs (a wrong partition or account) is one line; submitit echoes it too
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                for cfg in batch:
                    jobs.append(executor.submit(SlurmRun(
                        cfg.model_dump_json(), out_abs, ckpt_abs, sweep, models_abs, device=device,
                        compile_model=compile_model, threads=threads)))
        except (RuntimeError, OSError) as exc:
            raise TrainError(f"Slurm did not take the jobs: {_one_line(exc)}") from None
        ids = [str(j.job_id) for j in jobs]
        outcome.submitted += ids
        log(f"submitted {len(jobs)} job(s): {', '.join(ids)}; results go to {out_abs}; logs in {logs} (%j: job id)")
        if waits:
            for cfg, job in zip(batch, jobs, strict=True):
                try:  # the debug executor runs the job here; what it prints is log, not results
                    with contextlib.redirect_stdout(sys.stderr):
                        result = job.result()
                except Exception as exc:  # submitit's FailedJobError, or the job's own (debug executor)
                    where = job.paths.stderr if hasattr(job, "paths") else logs
                    outcome.failed.append(f"{cfg.name}: job {job.job_id} failed: {job_error(exc)}; log {where}")
                    log(outcome.failed[-1])
                    continue
                if result is not None:
                    outcome.records.append(RunRecord.model_validate(result))
    return outcome


def _one_line(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__

