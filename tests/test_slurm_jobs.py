"""`--launcher slurm` jobs as a cluster runs them, without a cluster: submitit's own signal
handler and job environment for a preemption, and its debug executor (jobs run in this
process) for a failing job and for the flags a job must train with.

Expected values come from the README: a preempted or timed-out job is requeued and resumes
from its checkpoint, a job that fails is reported with its log and the sweep's other runs still
land, and a run's flags (--device, --compile, --threads) hold in its job as they do in process.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest

pytest.importorskip("submitit")
pytest.importorskip("torch")
pytest.importorskip("transformers")


def _spec(path, corpus, *, weights='["fp32"]', max_steps=6, cluster="debug", extra=""):
    path.write_text(
        f'name = "j"\npresets = ["tiny-50k"]\ntokens_per_param = [1000]\nweights = {weights}\n'
        f"[train]\ncontext = 16\nbatch_size = 4\nmax_steps = {max_steps}\neval_tokens = 64\ncheckpoint_every = 0\n"
        f'[data]\nsource = "{corpus}"\ntokenizer = "bpe:300"\nval_fraction = 0.1\n'
        f'[slurm]\ncluster = "{cluster}"\nfolder = "{path.parent}/logs/%j"\n{extra}'
    )
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))


def test_a_preempted_job_checkpoints_the_step_it_reached_and_resumes_there(tmp_path, docs_file, cache, monkeypatch):
    # submitit's handler for the preemption signal calls the job's checkpoint() and exits at
    # once, mid-step: the requeued job resumed from the run's last periodic checkpoint (none
    # here: step 0), every step since lost. It now stops after the step, as Ctrl-C does.
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE, LocalJobEnvironment

    from gmse_cli.training import launch, loop
    from gmse_cli.training.results import load_records
    from gmse_cli.training.sweep import expand_sweep, load_sweep

    (cfg,) = expand_sweep(load_sweep(_spec(tmp_path / "s.toml", docs_file(40_000))))
    out, root = tmp_path / "r.jsonl", tmp_path / "ckpt"
    for name, value in {"SUBMITIT_LOCAL_JOB_ID": "7", "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
                        "SUBMITIT_LOCAL_LOCALID": "0", "SUBMITIT_LOCAL_NODEID": "0",
                        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(name, value)
    job = launch.SlurmRun(cfg.model_dump_json(), str(out), str(root), "j", device="cpu")
    delayed = DelayedSubmission(job)
    delayed.set_timeout(30, 3)
    paths = JobPaths(tmp_path / "logs", job_id="7")
    paths.folder.mkdir()
    steps: list[int] = []
    real = loop.train_run

    def train_run(*args, **kwargs):
        def on_step(step, loss):
            steps.append(step)
            if step == 4 and len(steps) == 4:  # the first session only: Slurm preempts the job here
                signal.raise_signal(signal.SIGUSR2)
        return real(*args, **kwargs, on_step=on_step)

    monkeypatch.setattr(loop, "train_run", train_run)
    previous = signal.signal(signal.SIGUSR2, SignalHandler(LocalJobEnvironment(), paths, delayed).checkpoint_and_try_requeue)
    try:
        with pytest.raises(SystemExit) as stopped:  # submitit requeues the job and ends this session
            job()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == LOCAL_REQUEUE_RETURN_CODE
    assert paths.submitted_pickle.is_file()  # what the requeued job runs
    assert (root / cfg.run_key() / "latest").read_text() == "step-000000004"
    assert not out.exists()
    requeued = DelayedSubmission.load(paths.submitted_pickle)
    requeued.result()  # the requeued job
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed after step 4: no step trained twice, none lost
    (record,) = load_records(out)
    assert record.training.steps == 6 and record.tokens == 6 * 4 * 16


def test_a_failed_job_is_reported_with_its_log_and_the_other_runs_land(run_cli, tmp_path, docs_file, cache,
                                                                     monkeypatch):
    # A job that failed was submitit's traceback (exit 1), and the runs after it were never
    # submitted or waited for. The failure is now a line naming the run, its job and its log;
    # the other runs train and print, and the command ends in one error line, exit 2.
    from gmse_cli.training import loop

    real = loop.train_run

    def train_run(cfg, **kwargs):
        if cfg.weights.display_name == "int4":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(cfg, **kwargs)

    monkeypatch.setattr(loop, "train_run", train_run)
    monkeypatch.setattr("pdb.post_mortem", lambda *args: None)  # the debug executor's, on a failed job
    spec = _spec(tmp_path / "s.toml", docs_file(40_000), weights='["int4", "fp32", "int2"]', max_steps=1)
    out = tmp_path / "r.jsonl"
    result = run_cli("train", str(spec), "--launcher", "slurm", "--json", "--out", str(out))
    assert result.code == 2
    landed = sorted(json.loads(line)["weights"] for line in out.read_text().splitlines())
    assert landed == ["fp32", "int2"]
    assert sorted(r["weights"] for r in json.loads(result.stdout)["results"]) == ["fp32", "int2"]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    (failed,) = [line for line in lines if " failed: " in line]
    assert "w:int4" in failed and "CUDA out of memory (simulated)" in failed and str(tmp_path / "logs") in failed
    assert lines[-1].startswith("error: 1 of 3 job(s) failed")
    assert sum(line.startswith("error:") for line in lines) == 1
    # the same command again submits the failed run only
    monkeypatch.setattr(loop, "train_run", real)
    again = run_cli("train", str(spec), "--launcher", "slurm", "--json", "--out", str(out))
    assert again.code == 0, again.stderr
    assert "submitted 1 job(s)" in again.stderr
    assert sorted(json.loads(line)["weights"] for line in out.read_text().splitlines()) == ["fp32", "int2", "int4"]


def test_a_job_trains_with_the_flags_of_the_command(run_cli, tmp_path, docs_file, cache, monkeypatch):
    # --device, --compile and --threads were dropped on the way to a job: `--device cpu` on a
    # GPU node trained on its GPU, `--compile` compiled nothing and `--threads 1` took every core.
    import torch

    from gmse_cli.training import launch, loop

    seen: list[tuple] = []
    monkeypatch.setattr(loop, "train_run", lambda cfg, **kw: seen.append(
        (kw.get("device", "auto"), kw.get("compile_model", False), torch.get_num_threads())))
    jobs: list = []

    class Job(launch.SlurmRun):
        def __call__(self):
            jobs.append(self)
            torch.set_num_threads(2)  # a job's own process: torch's default, not the command's
            return super().__call__()

    monkeypatch.setattr(launch, "SlurmRun", Job)
    spec = _spec(tmp_path / "s.toml", docs_file(40_000))
    threads = torch.get_num_threads()
    try:
        result = run_cli("train", str(spec), "--launcher", "slurm", "--device", "cpu", "--compile", "--threads", "1",
                         "--out", str(tmp_path / "r.jsonl"))
    finally:
        torch.set_num_threads(threads)
    assert result.code == 0, result.stderr
    assert len(jobs) == 1 and seen == [("cpu", True, 1)]


def test_a_dry_run_shows_the_sbatch_options_the_jobs_get(run_cli, tmp_path, docs_file, monkeypatch):
    # A dry run showed the runs and their time, never what would be asked of Slurm. Its line is
    # checked against the job script submitit hands to a fake sbatch.
    import re
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\n/bin/cp "$1" "{bin_dir}/submitted.sh"\necho "Submitted batch job 99"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", str(bin_dir))
    slurm = 'partition = "gpux"\naccount = "acme"\nqos = "high"\ngpus_per_node = 2\ntimeout_min = 45\nmem_gb = 64\nmax_parallel = 2\n'
    spec = _spec(tmp_path / "s.toml", docs_file(40_000), weights='["fp32", "int4", "int2"]', cluster="slurm",
                 extra=slurm)
    out = str(tmp_path / "r.jsonl")
    plan = run_cli("train", str(spec), "--launcher", "slurm", "--dry-run", "--device", "cuda", "--json", "--out", out)
    assert plan.code == 0, plan.stderr
    json.loads(plan.stdout)  # the plan's JSON stays whole
    (line,) = [line for line in plan.stderr.splitlines() if line.startswith("sbatch, 3 job(s): ")]
    shown = dict(re.findall(r"--([\w-]+)=(\S+)", line.split("; logs")[0]))
    assert shown["partition"] == "gpux" and shown["account"] == "acme" and shown["qos"] == "high"
    assert shown["time"] == "45" and shown["gpus-per-node"] == "2" and shown["ntasks-per-node"] == "2"
    assert shown["array"] == "0-2%2" and shown["mem"] == "64GB"
    submitted = run_cli("train", str(spec), "--launcher", "slurm", "--out", out)
    assert submitted.code == 0, submitted.stderr
    script = (bin_dir / "submitted.sh").read_text()
    written = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, flags=re.M))
    assert shown == {key: written[key] for key in shown}


def test_cuda_jobs_with_no_gpu_per_node_are_one_line(run_cli, tmp_path, docs_file, monkeypatch):
    # `--device cuda` now reaches the jobs: with gpus_per_node = 0 each one failed on its node.
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing is submitted: no sbatch needed
    spec = _spec(tmp_path / "s.toml", docs_file(40_000), cluster="slurm", extra="gpus_per_node = 0\n")
    for dry in ([], ["--dry-run"]):  # a dry run shows what the submission would answer
        result = run_cli("train", str(spec), "--launcher", "slurm", "--device", "cuda", *dry,
                         "--out", str(tmp_path / "r.jsonl"))
        assert result.code == 2, dry
        (line,) = [line for line in result.stderr.splitlines() if line.strip()]
        assert line == "error: --device cuda with [slurm] gpus_per_node = 0: the jobs would get no GPU"


if sys.platform == "win32":  # pragma: no cover - submitit's executors need POSIX signals
    pytestmark = pytest.mark.skip("POSIX only")


def test_a_preemption_outside_the_step_loop_still_requeues():
    # Outside the training loop (data preparation, the final evaluation, the record's append)
    # the SIGINT the preemption signal becomes is Python's own KeyboardInterrupt, raised inside
    # the handler itself: the job must still go to submitit's handler (checkpoint and requeue),
    # not die of the KeyboardInterrupt as a failed job.
    from gmse_cli.training.submitit_jobs import preemption_stops_after_the_step

    requeued: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: requeued.append(signum))
    try:
        with preemption_stops_after_the_step():  # submitit's handler returns here, as on a rank > 0
            signal.raise_signal(signal.SIGUSR2)
    except KeyboardInterrupt:
        pytest.fail("the preemption signal ended the job as a KeyboardInterrupt")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert requeued == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
