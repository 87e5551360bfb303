"""Distribution of training work: `--shard K/N`, the torchrun launcher's output and Slurm
submission through submitit, checked without a cluster (a fake ``sbatch``/``srun`` on PATH).

Expected values come from the README's description, never from the code's own output: shards
partition the planned runs, the results print once, one Slurm array job per unfinished run at
most ``max_parallel`` at once, one task per GPU, and bad input is one error line with exit 2.
"""

from __future__ import annotations

import json
import lzma
import re
import stat
from pathlib import Path

import pytest

from gmse_cli.cli.train import _shard
from gmse_cli.errors import TrainError


def _corpus(folder: Path, chars: int, shared_data: Path) -> Path:
    with lzma.open(shared_data / "python-docs-3.11.txt.xz", "rt", encoding="utf-8") as handle:
        text = handle.read(chars)
    path = folder / "docs.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _sweep(path: Path, corpus: Path, *, seeds: int = 1, weights: str = '["fp32"]', slurm: str = "") -> Path:
    path.write_text(
        f'name = "d"\npresets = ["tiny-50k"]\ntokens_per_param = [1000]\nweights = {weights}\n'
        f"seeds = {list(range(seeds))}\n"
        "[train]\ncontext = 16\nbatch_size = 4\nmax_steps = 1\neval_tokens = 64\ncheckpoint_every = 0\n"
        f'[data]\nsource = "{corpus}"\ntokenizer = "bpe:300"\nval_fraction = 0.1\n' + slurm
    )
    return path


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# --shard K/N
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shard", ["²/²", "1/²", "①/2", "١/٢", "0/2", "3/2", "1/0", "a/b", "1/2/3", "-1/2"])
def test_bad_shard_is_one_error_line(run_cli, shard):
    # '²' and '①' pass str.isdigit() but not int(): they were a ValueError traceback (exit 1).
    result = run_cli("train", "train/cpu-quick.toml", "--dry-run", "--shard", shard)
    assert result.code == 2
    (line,) = _error_lines(result.stderr)
    assert line.startswith("error:") and "--shard" in line


@pytest.mark.parametrize("shard", ["²/²", "1/²"])
def test_shard_parser_takes_ascii_digits_only(shard):
    with pytest.raises(TrainError, match="K/N"):
        _shard(list(range(5)), shard)


@pytest.mark.parametrize("runs", [1, 2, 7, 13])
def test_shards_cover_every_planned_run_exactly_once(run_cli, tmp_path, shared_data, runs):
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), seeds=runs)
    plan = ("train", str(spec), "--dry-run", "--device", "cuda", "--json", "--out", str(tmp_path / "r.jsonl"))

    def keys(*extra: str) -> list[str]:
        result = run_cli(*plan, *extra)
        assert result.code == 0, result.stderr
        return [p["plan"]["run_key"] for p in json.loads(result.stdout)["results"]]

    everything = keys()
    assert len(everything) == len(set(everything)) == runs
    for n in range(1, 7):
        shards = [keys("--shard", f"{k}/{n}") for k in range(1, n + 1)]
        assert sorted(key for shard in shards for key in shard) == sorted(everything)
        # every N-th run from the K-th, as the option's help says: sizes differ by at most one
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


# --------------------------------------------------------------------------------------------
# --launcher torchrun: the results print once
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["table", "json"])
def test_torchrun_launcher_prints_the_results_once(run_cli, tmp_path, shared_data, monkeypatch, form):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from gmse_cli.cli import main
    from gmse_cli.training import launch

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[list[str]] = []

    def one_worker(args: list[str], *, nproc_per_node: int) -> int:
        # torchrun's rank 0 in this process: it prints to the same stdout the parent does.
        calls.append(args)
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    monkeypatch.setattr(launch, "run_torchrun", one_worker)
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 40_000, shared_data))
    flags = ["--json"] if form == "json" else []
    result = run_cli("train", str(spec), "--launcher", "torchrun", "--nproc-per-node", "2", "--threads", "1",
                     "--no-progress", "--out", str(tmp_path / "r.jsonl"), *flags)
    assert result.code == 0, result.stderr
    assert len(calls) == 1 and calls[0][-2:] == ["--launcher", "local"]
    if form == "json":  # one JSON document (it was the worker's table, then the parent's JSON)
        assert len(json.loads(result.stdout)["results"]) == 1
    else:  # one table: a header and one run (it was printed twice)
        rows = [line.split()[0] for line in result.stdout.splitlines() if line.strip("\u2500-")]  # no header rule
        assert rows == ["run", "tiny-50k/w:fp32/a:none/tpp1000/s0"]


# --------------------------------------------------------------------------------------------
# --launcher slurm without a cluster
# --------------------------------------------------------------------------------------------


def _fake_slurm(folder: Path, *, sbatch_exit: int) -> Path:
    """``sbatch`` that keeps the script it is given (or refuses it, as for a wrong partition)
    and an ``srun`` that submitit only looks for."""
    folder.mkdir()
    sbatch = folder / "sbatch"
    if sbatch_exit:
        sbatch.write_text('#!/bin/sh\necho "sbatch: error: invalid partition specified: gpux" >&2\nexit 1\n')
    else:
        sbatch.write_text(f'#!/bin/sh\n/bin/cp "$1" "{folder}/submitted.sh"\necho "Submitted batch job 4242"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (folder / tool).chmod(stat.S_IRWXU)
    return folder


_SLURM = '[slurm]\npartition = "gpux"\ngpus_per_node = 4\ntimeout_min = 30\nmax_parallel = 2\nfolder = "{logs}/%j"\n'


def test_slurm_launcher_on_a_machine_without_slurm_is_one_line(run_cli, tmp_path, shared_data, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun: it was a RuntimeError traceback
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), slurm=_SLURM.format(logs=tmp_path))
    result = run_cli("train", str(spec), "--launcher", "slurm", "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 2
    (line,) = _error_lines(result.stderr)
    assert line.startswith("error:") and "srun" in line


def test_slurm_refusing_the_jobs_is_one_line(run_cli, tmp_path, shared_data, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(_fake_slurm(tmp_path / "bin", sbatch_exit=1)))
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), slurm=_SLURM.format(logs=tmp_path))
    result = run_cli("train", str(spec), "--launcher", "slurm", "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 2  # it was submitit's FailedJobError traceback, after sbatch's own line
    (line,) = _error_lines(result.stderr)
    assert line.startswith("error:") and "invalid partition specified: gpux" in line


def test_slurm_array_follows_the_spec_and_the_shard(run_cli, tmp_path, shared_data, monkeypatch):
    pytest.importorskip("submitit")
    bin_dir = _fake_slurm(tmp_path / "bin", sbatch_exit=0)
    monkeypatch.setenv("PATH", str(bin_dir))
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), weights='["fp32", "int4", "int3", "int2"]',
                  seeds=2, slurm=_SLURM.format(logs=tmp_path))
    # 8 runs; shard 2/3 holds runs 2, 5 and 8: three array tasks, at most two at once.
    result = run_cli("train", str(spec), "--launcher", "slurm", "--shard", "2/3", "--json",
                     "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["submitted"] == ["4242_0", "4242_1", "4242_2"]
    script = (bin_dir / "submitted.sh").read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, flags=re.M))
    assert options["array"] == "0-2%2"
    assert options["partition"] == "gpux" and options["time"] == "30" and options["nodes"] == "1"
    assert options["gpus-per-node"] == "4" and options["ntasks-per-node"] == "4"  # one task per GPU


# --------------------------------------------------------------------------------------------
# Two sweeps on one results file: a run one of them is training
# --------------------------------------------------------------------------------------------


def test_a_run_another_process_is_training_is_skipped_not_raced(run_cli, tmp_path, shared_data, monkeypatch):
    # The same sweep started twice: both trained every run in one checkpoint folder, and the one
    # that finished second found the folder deleted by the first one's finish (exit 2, in 2 of 5
    # tries). The other process's claim is an exclusive lock on <out>.ckpt/<run key>.lock.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import fcntl

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 40_000, shared_data))
    out = tmp_path / "r.jsonl"
    plan = run_cli("train", str(spec), "--dry-run", "--device", "cuda", "--json", "--out", str(out))
    (key,) = [p["plan"]["run_key"] for p in json.loads(plan.stdout)["results"]]
    lock = tmp_path / "r.jsonl.ckpt" / f"{key}.lock"
    lock.parent.mkdir()
    train = ("train", str(spec), "--threads", "1", "--no-progress", "--out", str(out))
    with open(lock, "a+") as other:  # another process is training the run
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = run_cli(*train)
        assert busy.code == 0, busy.stderr
        assert "another process is training it, skipped" in " ".join(busy.stderr.split())
        assert not out.exists() and not (lock.parent / key).exists()  # nothing trained, no checkpoint
    done = run_cli(*train)  # the claim is gone (the process died): this one trains the run
    assert done.code == 0, done.stderr
    assert [json.loads(line)["run_key"] for line in out.read_text().splitlines()] == [key]
    assert list(lock.parent.iterdir()) == []  # checkpoints and lock file removed once recorded


# --------------------------------------------------------------------------------------------
# A batch the processes cannot split: found before any worker or job starts
# --------------------------------------------------------------------------------------------


def test_a_batch_torchrun_processes_cannot_split_is_one_line_before_launching(run_cli, tmp_path, shared_data,
                                                                              monkeypatch):
    pytest.importorskip("torch")  # trains (or plans with) the [train] extra
    # It was found in every worker after tokenizing: each printed it, then torchrun's
    # ChildFailedError traceback (44 lines, exit 2).
    from gmse_cli.training import launch

    launched: list[list[str]] = []
    monkeypatch.setattr(launch, "run_torchrun", lambda args, nproc_per_node: launched.append(args) or 0)
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data))
    for nproc, batch, micro, why in ((3, "2", None, "batch_size 2 is not divisible by the 3 processes"),
                                     (2, "12", "4", "micro_batch_size 4 does not divide the per-process batch 6")):
        extra = ["--micro-batch-size", micro] if micro else []
        result = run_cli("train", str(spec), "--launcher", "torchrun", "--nproc-per-node", str(nproc),
                         "--batch-size", batch, *extra, "--out", str(tmp_path / "r.jsonl"))
        assert result.code == 2
        (line,) = _error_lines(result.stderr)
        assert line == f"error: {why}"
    assert launched == []


def test_a_batch_a_slurm_job_cannot_split_is_found_at_planning(run_cli, tmp_path, shared_data):
    # 4 GPUs per node, one task each: a batch of 2 failed in every queued job, after its wait.
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), slurm=_SLURM.format(logs=tmp_path))
    result = run_cli("train", str(spec), "--launcher", "slurm", "--dry-run", "--device", "cuda", "--batch-size", "2",
                     "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 2
    (line,) = _error_lines(result.stderr)
    assert line == "error: batch_size 2 is not divisible by the 4 processes"
    ok = run_cli("train", str(spec), "--launcher", "slurm", "--dry-run", "--device", "cuda", "--batch-size", "8",
                 "--out", str(tmp_path / "r.jsonl"))
    assert ok.code == 0, ok.stderr


def test_slurm_settings_the_local_executor_refuses_are_one_line(run_cli, tmp_path, shared_data):
    pytest.importorskip("submitit")
    slurm = f'[slurm]\ncluster = "local"\nnodes = 2\nfolder = "{tmp_path}/%j"\n'
    spec = _sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), slurm=slurm)
    result = run_cli("train", str(spec), "--launcher", "slurm", "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 2  # it was submitit's ValueError traceback
    (line,) = _error_lines(result.stderr)
    assert line.startswith("error:") and "one node" in line
    assert not (tmp_path / "r.jsonl").exists()


# --------------------------------------------------------------------------------------------
# Ctrl-C reaching one rank
# --------------------------------------------------------------------------------------------

_RANK_WORKER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from gmse_cli.training.config import RunConfig
from gmse_cli.training.loop import train_run

cfg = RunConfig.model_validate(dict(
    preset="tiny-50k", tokens_per_param=1000, batch_size=4, context=16, eval_tokens=64, max_steps=40,
    checkpoint_every=0, data={"source": sys.argv[1], "tokenizer": "bpe:300", "val_fraction": 0.1}))

def interrupt(step, loss):
    if step == 3 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGINT)  # this rank only: a signal sent to one worker

try:
    train_run(cfg, run_dir=sys.argv[2], device="cpu", progress=False, on_step=interrupt)
except KeyboardInterrupt as exc:
    print("stopped:", exc)
"""


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, shared_data):
    # Rank 1 stopped and waited in the checkpoint's barrier while rank 0 waited in the next
    # step's gradient all-reduce: both hung (gloo's timeout is 30 minutes).
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import os
    import socket
    import subprocess
    import sys

    corpus = _corpus(tmp_path, 40_000, shared_data)
    worker = tmp_path / "worker.py"
    worker.write_text(_RANK_WORKER)
    with socket.socket() as probe:  # a free port for the process group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = Path(__file__).resolve().parents[1]
    base = os.environ | {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                         "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "USCL_CACHE_DIR": str(tmp_path / "cache")}
    # Rank 0 first: it tokenizes into the cache, then the barrier lets rank 1 read it.
    procs = [subprocess.Popen([sys.executable, str(worker), str(corpus), str(tmp_path / "run")],
                              env=base | {"RANK": str(r), "LOCAL_RANK": str(r)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-2000:]
        assert stdout.startswith("stopped: stopped at step 3;"), (stdout, stderr[-2000:])
    assert (tmp_path / "run" / "latest").read_text() == "step-000000003"


def test_local_executor_runs_at_most_max_parallel_jobs_at_once(tmp_path, shared_data, monkeypatch):
    # submitit's local executor starts every submitted job at once: a 7-run sweep with
    # max_parallel = 3 ran 7 trainings side by side on one machine. A fake executor counts how
    # many jobs are submitted and not yet waited for.
    submitit = pytest.importorskip("submitit")
    import contextlib

    from gmse_cli.training.launch import run_slurm
    from gmse_cli.training.sweep import expand_sweep, load_sweep

    running, peak = [], []

    class Job:
        def __init__(self, n):
            self.job_id = str(n)

        def result(self):
            running.remove(self)
            return None

    class Executor:
        def __init__(self, folder, cluster):
            self.n = 0

        def update_parameters(self, **params):
            pass

        @contextlib.contextmanager
        def batch(self):
            yield

        def submit(self, fn):
            self.n += 1
            running.append(Job(self.n))
            peak.append(len(running))
            return running[-1]

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    slurm = f'[slurm]\ncluster = "local"\nmax_parallel = 3\nfolder = "{tmp_path}/%j"\n'
    spec = load_sweep(_sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data), seeds=7, slurm=slurm))
    runs = expand_sweep(spec)
    assert len(runs) == 7
    outcome = run_slurm(runs, out=tmp_path / "r.jsonl", checkpoint_root=tmp_path / "ckpt", settings=spec.slurm)
    assert len(outcome.submitted) == 7 and max(peak) == 3 and not running


def _one_run(tmp_path, shared_data):
    from gmse_cli.training.sweep import expand_sweep, load_sweep

    (cfg,) = expand_sweep(load_sweep(_sweep(tmp_path / "s.toml", _corpus(tmp_path, 1000, shared_data))))
    return cfg


def test_a_slurm_job_skips_a_run_another_job_has_claimed(tmp_path, shared_data, monkeypatch):
    pytest.importorskip("torch")  # trains (or plans with) the [train] extra
    # The same sweep submitted twice trained every run twice: Slurm jobs took no claim.
    import fcntl

    from gmse_cli.training import launch

    cfg = _one_run(tmp_path, shared_data)
    monkeypatch.setattr("gmse_cli.training.loop.train_run", lambda *a, **k: pytest.fail("trained a claimed run"))
    root = tmp_path / "ckpt"
    root.mkdir()
    with open(root / f"{cfg.run_key()}.lock", "a+") as other_job:  # its own open file: a separate lock
        fcntl.flock(other_job, fcntl.LOCK_EX | fcntl.LOCK_NB)
        job = launch.SlurmRun(cfg.model_dump_json(), str(tmp_path / "r.jsonl"), str(root), "d")
        assert job() is None
    assert not (tmp_path / "r.jsonl").exists()


def test_a_filesystem_without_locks_still_trains(tmp_path, shared_data, monkeypatch):
    pytest.importorskip("torch")  # trains (or plans with) the [train] extra
    # Lustre without the flock mount option answers flock() with ENOSYS: that was a traceback.
    import errno

    from gmse_cli import locks
    from gmse_cli.training import launch

    def no_locks(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with launch._claim(tmp_path / "ckpt", "k") as mine:
        assert mine
